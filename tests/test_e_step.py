"""The E-step: scoring overlaps sampling, shards are written only once scored, crashes lose nothing."""

import dataclasses
import os
import tempfile
import threading

import jax
import seqio
from absl.testing import absltest

from restem_jax.engine import partitioning
from restem_jax.engine.engine import Engine
from restem_jax.engine.sampler import SamplingConfig
from restem_jax.restem import e_step
from tests.micro_task import make_micro_task
from tests.utils import TINY, tiny_params

SAMPLING = SamplingConfig(num_samples=2, temperature=1.0, top_k=0, max_new_tokens=4)


class EStepTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # TINY's 128 ids cover printable ASCII of the byte vocabulary.
    cls.engine = Engine(TINY, seqio.ByteVocabulary(),
                        partitioning.make_mesh(devices=jax.devices()[:1]),
                        max_prompt_len=32, sample_batch=2)
    cls.params = tiny_params()
    cls.task = make_micro_task(num_train=12)
    cls.problems = list(cls.task.load_split("train"))

  def run_e_step(self, out_dir, task=None, problems=None):
    return e_step.run_e_step(self.engine, task or self.task, self.params,
                             problems or self.problems, SAMPLING, iteration=1, seed=3,
                             out_dir=out_dir, shard_size=4)

  def test_a_shard_is_scored_while_later_shards_sample(self):
    events, overlapped = [], []
    last_shard_sampled = threading.Event()
    score = self.task.score

    def recording_score(records, completions):
      events.append(("score", len(records)))
      if len(overlapped) == 0:
        # Shard 0's scoring waits for the sampler to reach shard 2: only sampling that goes
        # on while a shard is scored gets there (scoring in line would wait out the deadline).
        overlapped.append(last_shard_sampled.wait(timeout=60))
      return score(records, completions)

    stream = self.engine.stream

    def recording_stream(*args, **kwargs):
      for i, row in stream(*args, **kwargs):
        events.append(("prompt", i))
        if i >= 8:
          last_shard_sampled.set()
        yield i, row

    task = dataclasses.replace(self.task, score_batch=recording_score)
    self.engine.stream = recording_stream
    try:
      with tempfile.TemporaryDirectory() as tmp:
        samples = self.run_e_step(tmp, task)
    finally:
      del self.engine.stream
    kinds = [kind for kind, _ in events]
    self.assertEqual(kinds.count("score"), 3)  # One batch per shard of 4 problems x 2 samples.
    self.assertEqual(overlapped, [True])
    last_prompt = len(kinds) - 1 - kinds[::-1].index("prompt")
    self.assertLess(kinds.index("score"), last_prompt)
    # The same samples and rewards as sampling everything, then scoring it.
    completions = self.engine.generate(self.params, [p.prompt for p in self.problems], SAMPLING,
                                       seed=3, prompt_ids=range(len(self.problems)),
                                       stop_strings=self.task.stop_strings)
    flat = [(p, c) for p, row in zip(self.problems, completions) for c in row]
    self.assertEqual([(s.problem_id, s.completion) for s in samples],
                     [(p.id, c.text) for p, c in flat])
    self.assertEqual([s.reward for s in samples],
                     score([p.record for p, _ in flat], [c.text for _, c in flat]))

  def test_a_reward_crash_names_the_problem_and_keeps_finished_shards(self):
    problems = list(self.problems)
    bad = problems[9]  # In the last shard (problems 8-11).
    problems[9] = dataclasses.replace(bad, record={**bad.record, "boom": True})

    def fragile(records, completions):
      if any("boom" in r for r in records):
        raise ValueError("malformed record")
      return self.task.score(records, completions)

    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, "samples")
      with self.assertRaisesRegex(RuntimeError,
                                  rf"shard_00002\.jsonl failed at problem '{bad.id}' sample 0.*"
                                  "malformed record.*rerun to resume"):
        self.run_e_step(out, dataclasses.replace(self.task, score_batch=fragile), problems)
      self.assertEqual(sorted(os.listdir(out)), ["shard_00000.jsonl", "shard_00001.jsonl"])
      kept = {name: open(os.path.join(out, name)).read() for name in os.listdir(out)}
      self.assertLen(kept["shard_00001.jsonl"].splitlines(), 8)
      resumed = self.run_e_step(out, problems=problems)
      for name, text in kept.items():  # Finished shards are read back, not redone.
        self.assertEqual(open(os.path.join(out, name)).read(), text)
      clean = self.run_e_step(os.path.join(tmp, "clean"), problems=problems)
    self.assertEqual(resumed, clean)


if __name__ == "__main__":
  absltest.main()
