"""The M-step's train step with and without remat: XLA's memory figures, RSS and step time.

SmolLM2-135M's shapes (random weights: memory and time do not depend on
them), AdamW, one CPU device, a batch of random tokens. Each setting runs in
its own process so RSS is its own.

    python benchmarks/bench_remat.py --rows=8 --seq_len=96,512
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_integer("rows", 8, "batch rows (FinetuneConfig.batch_size).")
flags.DEFINE_list("seq_len", ["96", "512"], "tokens per row (FinetuneConfig.seq_len).")
flags.DEFINE_string("optimizer", "adamw", "adamw or adafactor.")
flags.DEFINE_integer("steps", 3, "timed steps after a compile step (best is reported).")
flags.DEFINE_string("worker", "", "internal: 'remat,seq_len' to measure in this process.")
FLAGS = flags.FLAGS


def _measure(remat: bool, seq_len: int) -> dict:
  # pylint: disable=import-outside-toplevel
  import jax
  import numpy as np
  from restem_jax.engine.config import ModelConfig
  from restem_jax.engine.params import init_params
  from restem_jax.engine.partitioning import make_mesh
  from restem_jax.engine.trainer import OptimizerConfig, Trainer
  cfg = ModelConfig(vocab_size=49152, embed_dim=576, num_layers=30, num_heads=9, num_kv_heads=3,
                    head_dim=64, mlp_dim=1536, activation="silu", tie_embeddings=True,
                    rope_theta=1e5, remat=remat)
  mesh = make_mesh()
  trainer = Trainer(cfg, OptimizerConfig(name=FLAGS.optimizer), mesh)
  memory = trainer.compile_ahead(FLAGS.rows, seq_len).memory_analysis()
  state = trainer.init_state(init_params(trainer.model, jax.random.PRNGKey(0), mesh,
                                         trainer.rules), donate=True)
  rng = np.random.default_rng(0)
  batch = {"tokens": rng.integers(0, cfg.vocab_size, (FLAGS.rows, seq_len)).astype(np.int32),
           "target_mask": np.ones((FLAGS.rows, seq_len), np.float32),
           "valid": np.ones((FLAGS.rows, seq_len), bool),
           "reward": np.ones(FLAGS.rows, np.float32)}
  state, _ = trainer.step(state, batch)
  times = []
  for _ in range(FLAGS.steps):
    start = time.perf_counter()
    state, _ = trainer.step(state, batch)
    times.append(time.perf_counter() - start)
  mb = 2 ** 20
  return {"remat": remat, "rows": FLAGS.rows, "seq_len": seq_len,
          "temp_mb": round(memory.temp_size_in_bytes / mb),
          "argument_mb": round(memory.argument_size_in_bytes / mb),
          "alias_mb": round(memory.alias_size_in_bytes / mb),
          "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
          "step_s": round(min(times), 2), "all_s": [round(t, 2) for t in times]}


def main(_):
  if FLAGS.worker:
    remat, seq_len = FLAGS.worker.split(",")
    print("RESULT " + json.dumps(_measure(remat == "1", int(seq_len))), flush=True)
    return
  import os  # pylint: disable=import-outside-toplevel
  print(f"load before: {os.getloadavg()}")
  for seq_len in FLAGS.seq_len:
    for remat in ("0", "1"):
      out = subprocess.run([sys.executable, __file__, f"--worker={remat},{seq_len}",
                            f"--rows={FLAGS.rows}", f"--optimizer={FLAGS.optimizer}",
                            f"--steps={FLAGS.steps}"], capture_output=True, text=True, check=True)
      print([l for l in out.stdout.splitlines() if l.startswith("RESULT ")][-1][7:], flush=True)
  print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
  app.run(main)
