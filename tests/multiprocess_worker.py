"""One process of the unit-level multi-process test: restore, train step, sampler, scoring.

    python tests/multiprocess_worker.py PORT NUM_PROCESSES PROCESS_ID OUT_DIR

With NUM_PROCESSES > 1 it joins a jax.distributed job first. The mesh spans
every process's devices; process 0 writes what it saw to OUT_DIR/results.npz.
"""

import os
import sys

import jax
import numpy as np


def main(port: int, num_processes: int, process_id: int, out: str) -> None:
  if num_processes > 1:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)
  # pylint: disable=import-outside-toplevel
  from restem_jax.engine import partitioning
  from restem_jax.engine.config import ModelConfig
  from restem_jax.engine.engine import Engine
  from restem_jax.engine.sampler import SamplingConfig
  from restem_jax.engine.trainer import OptimizerConfig
  cfg = ModelConfig(vocab_size=128, embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=16, mlp_dim=128, parallel_block=False)
  # fsdp=2 x data=2: with 2 processes, every parameter and batch is split across hosts.
  mesh = partitioning.make_mesh(partitioning.MeshConfig(data=2, fsdp=2, tensor=1))
  engine = Engine(cfg, None, mesh, max_prompt_len=32, sample_batch=8)
  params = engine.init_params(0)
  engine.save(os.path.join(out, "ckpt"), params)
  restored = engine.restore(os.path.join(out, "ckpt"))
  replicated = partitioning.replicated(mesh)
  equal = jax.jit(lambda a, b: jax.tree.reduce(lambda x, y: x & y, jax.tree.map(
      lambda u, v: jax.numpy.all(u == v), a, b)), out_shardings=replicated)(params, restored)
  norm = jax.jit(lambda p: sum(jax.numpy.sum(x * x) for x in jax.tree.leaves(p)),
                 out_shardings=replicated)

  rng = np.random.default_rng(0)
  batch = {"tokens": rng.integers(1, 128, (8, 16)).astype(np.int32),
           "target_mask": np.tile((np.arange(16) >= 6).astype(np.float32), (8, 1)),
           "valid": np.ones((8, 16), bool), "reward": np.ones(8, np.float32)}
  trainer = engine.trainer(OptimizerConfig(name="adamw", learning_rate=1e-2))
  state, metrics = trainer.step(trainer.init_state(restored), batch)
  after = trainer.loss(state.params, batch)

  prompts = [rng.integers(1, 128, n).tolist() for n in (3, 7, 12, 5, 9)]
  samples = engine.sample(restored, prompts, SamplingConfig(num_samples=2, temperature=1.0,
                                                            top_k=0, max_new_tokens=8), seed=3)
  completions = [t[:n].tolist() for tokens, lengths in zip(samples.tokens, samples.lengths)
                 for t, n in zip(tokens, lengths)]
  scored = engine.token_logprobs(restored, [p for p in prompts for _ in range(2)], completions)
  if jax.process_index() == 0:
    np.savez(os.path.join(out, "results.npz"), restored_equal=bool(equal),
             step_loss=metrics["loss"], loss_after=after, norm_after=float(norm(state.params)),
             tokens=samples.tokens, lengths=samples.lengths, logprobs=samples.logprobs,
             scored=np.concatenate(scored), processes=jax.process_count(),
             devices=jax.device_count())


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
