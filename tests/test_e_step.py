"""The E-step: scoring overlaps sampling, shards are written only once scored, crashes lose nothing."""

import dataclasses
import os
import tempfile
import threading

import jax
import seqio
from absl.testing import absltest

from restem_jax import rewards
from restem_jax.checkpoint_io import files
from restem_jax.engine import partitioning
from restem_jax.engine.engine import Engine
from restem_jax.engine.sampler import SamplingConfig
from restem_jax.restem import e_step, stages
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
      self.assertLen(kept["shard_00001.jsonl"].splitlines(), 8 + 1)  # Samples, end record.
      resumed = self.run_e_step(out, problems=problems)
      for name, text in kept.items():  # Finished shards are read back, not redone.
        self.assertEqual(open(os.path.join(out, name)).read(), text)
      clean = self.run_e_step(os.path.join(tmp, "clean"), problems=problems)
    self.assertEqual(resumed, clean)

  def test_a_reward_input_error_names_the_problem_and_resume_redoes_only_its_shard(self):
    # The reward pool's own error (a GSM8K record without a number) names the item; the
    # E-step names its problem from that, without scoring the shard again item by item.
    problems = [dataclasses.replace(p, record={"answer": f"#### {p.record['answer']}"})
                for p in self.problems]
    bad = problems[9]  # Sample 0 of it is item 2 of the last shard (problems 8-11).
    problems[9] = dataclasses.replace(bad, record={"answer": "#### abc"})
    calls, prompts = [], []

    def pool_score(records, completions):
      calls.append(len(records))
      # A number in every completion, so the reward always reads the gold answer.
      return rewards.score_batch("gsm8k", records, [c + " 1" for c in completions],
                                 num_workers=1, progress=False)

    stream = self.engine.stream

    def recording_stream(*args, prompt_ids, **kwargs):
      prompts.extend(prompt_ids)
      return stream(*args, prompt_ids=prompt_ids, **kwargs)

    task = dataclasses.replace(self.task, score_batch=pool_score)
    with tempfile.TemporaryDirectory() as tmp:
      with self.assertRaisesRegex(e_step.ScoringError, rf"shard_00002\.jsonl failed at problem "
                                  rf"'{bad.id}' sample 0: RewardInputError: item 2: "):
        self.run_e_step(tmp, task, problems)
      self.assertEqual(calls, [8, 8, 8])  # One batch per shard, none to find the culprit.
      self.assertEqual(sorted(os.listdir(tmp)), ["shard_00000.jsonl", "shard_00001.jsonl"])
      problems[9] = dataclasses.replace(bad, record={"answer": "#### 7"})
      calls.clear()
      self.engine.stream = recording_stream
      try:
        resumed = self.run_e_step(tmp, task, problems)
      finally:
        del self.engine.stream
    self.assertEqual(prompts, [8, 9, 10, 11])  # Only the lost shard is sampled again...
    self.assertEqual(calls, [8])  # ...and scored.
    self.assertLen(resumed, 2 * len(problems))

  def test_damaged_shards_are_sampled_again_and_whole_ones_kept(self):
    with tempfile.TemporaryDirectory() as tmp:
      clean = self.run_e_step(tmp)
      paths = [os.path.join(tmp, f"shard_{k:05d}.jsonl") for k in range(3)]
      whole = open(paths[0]).read()
      lines = open(paths[1]).read().splitlines(keepends=True)
      with open(paths[1], "w") as f:  # Cut after its last sample: the end record is gone.
        f.writelines(lines[:-1])
      open(paths[2], "w").close()  # Zero length, as a crash before the data reached disk.
      with self.assertLogs(level="WARNING") as logs:
        resumed = self.run_e_step(tmp)
      self.assertEqual(resumed, clean)
      self.assertEqual(open(paths[0]).read(), whole)
      log = "\n".join(logs.output)
      for path in paths[1:]:
        self.assertIn(f"{path}: line", log)
        self.assertLen(e_step.read_samples(path), 4 * SAMPLING.num_samples)


class SamplesFileTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.path = os.path.join(tempfile.mkdtemp(), "samples.jsonl")
    self.samples = [e_step.Sample(f"p{i}", "Q", f"answer {i}", float(i % 2), -1.5, 1, i)
                    for i in range(5)]
    e_step.write_samples(self.path, self.samples)
    self.text = open(self.path).read()

  def damage(self, text):
    with open(self.path, "w") as f:
      f.write(text)

  def test_round_trip(self):
    self.assertEqual(e_step.read_samples(self.path), self.samples)
    e_step.write_samples(self.path, [])
    self.assertEqual(e_step.read_samples(self.path), [])

  def test_cut_short_anywhere_is_caught_with_its_line(self):
    for cut in (0, 1, len(self.text) // 2, len(self.text) - 2):
      with self.subTest(cut=cut):
        self.damage(self.text[:cut])
        with self.assertRaisesRegex(files.DamagedFileError, rf"{self.path}: line \d+: no end"):
          e_step.read_samples(self.path)

  def test_altered_or_dropped_lines_are_caught(self):
    lines = self.text.splitlines(keepends=True)
    for name, text in (("flipped", self.text.replace("answer 3", "answer 8")),
                       ("dropped", "".join(lines[:2] + lines[3:]))):
      with self.subTest(name):
        self.damage(text)
        with self.assertRaisesRegex(files.DamagedFileError, "altered"):
          e_step.read_samples(self.path)

  def test_a_damaged_stage_file_is_computed_again(self):
    self.damage(self.text[:-10])
    with self.assertLogs(level="WARNING") as logs:
      value = stages.stage(self.path, lambda: self.samples[:2], read=e_step.read_samples,
                           write=e_step.write_samples)
    self.assertEqual(value, self.samples[:2])
    self.assertEqual(e_step.read_samples(self.path), self.samples[:2])
    self.assertIn("computing it again", "\n".join(logs.output))

  def test_damaged_json_names_file_and_line(self):
    path = os.path.join(os.path.dirname(self.path), "metrics.json")
    files.write_json(path, {"a": 1, "b": [1, 2]})
    with open(path) as f:
      text = f.read()
    with open(path, "w") as f:
      f.write(text[:-4])
    with self.assertRaisesRegex(files.DamagedFileError, rf"{path}: line \d+: not valid JSON"):
      files.read_json(path)

  def test_writes_reach_the_disk_before_the_rename(self):
    synced = []
    real = os.fsync
    os.fsync = lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd)
    try:
      e_step.write_samples(self.path, self.samples)
    finally:
      os.fsync = real
    self.assertEqual(synced, [self.path + ".tmp", os.path.dirname(self.path)])


if __name__ == "__main__":
  absltest.main()
