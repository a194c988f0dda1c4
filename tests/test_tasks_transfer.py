"""Transfer evaluation: a tiny checkpoint evaluated on GSM8K and HumanEval fixtures."""

import json
import os
import tempfile

import numpy as np
import seqio
from absl.testing import absltest

from restem_jax import transfer
from restem_jax.engine import partitioning
from restem_jax.engine.config import ModelConfig
from restem_jax.engine.engine import Engine
from restem_jax.engine.sampler import SamplingConfig
from restem_jax.restem import metrics
from restem_jax.restem.evaluation import EvalConfig
from restem_jax.tasks import base

FOLDERS = os.path.join(os.path.dirname(__file__), "fixtures", "folders")
MODEL = ModelConfig(vocab_size=264, embed_dim=32, num_layers=1, num_heads=2, num_kv_heads=1,
                    head_dim=16, mlp_dim=64)
# max_new_tokens >= the longest stop string in tokens (a sampler limit).
EVAL = EvalConfig(pass_k_samples=2, pass_ks=(1, 2), maj_ks=(2,), max_new_tokens=16)


def _parity_task():
  """A task a random model half solves (even-length answers), so metrics are not 0 or 1."""
  problems = [base.Problem(id=str(i), prompt=f"{i} -> ", record={"level": f"Level {i % 2}"})
               for i in range(8)]
  return base.register(base.TaskSpec(
      name="transfer_parity", load_split=lambda split: problems, splits=("test",),
      reward=lambda record, completion: float(len(completion) % 2 == 0),
      extract_answer=lambda completion: len(completion) % 2, stop_strings=("\n",),
      vocabulary=seqio.ByteVocabulary()))


class TransferTest(absltest.TestCase):

  def test_writes_loop_metrics_per_task_and_resumes(self):
    engine = Engine(MODEL, seqio.ByteVocabulary(), partitioning.make_mesh(),
                    max_prompt_len=2048, sample_batch=4)
    task = _parity_task()
    with tempfile.TemporaryDirectory() as tmp:
      ckpt = os.path.join(tmp, "ckpt")
      params = engine.init_params(0)
      engine.save(ckpt, params)
      work = os.path.join(tmp, "transfer")
      names = ["restem_gsm8k", "restem_humaneval", task.name]
      summary = transfer.evaluate_tasks(engine, ckpt, names, work, EVAL, data_dir=FOLDERS,
                                        max_test=2)
      self.assertEqual(set(summary), set(names))
      for name in names:
        with open(os.path.join(work, name, "metrics.json")) as f:
          self.assertEqual(json.load(f), summary[name])
        self.assertEqual(set(summary[name]["pass@k"]), {"1", "2"})
        self.assertEqual(set(summary[name]["maj@k"]), {"2"})
      self.assertEqual(summary["restem_gsm8k"]["num_problems"], 2)

      # The numbers are the checkpoint's: recomputed here from its greedy and sampled outputs.
      problems = base.load_problems(task.name, "test")[:2]
      prompts, ids = [p.prompt for p in problems], range(len(problems))
      greedy = engine.generate(params, prompts, SamplingConfig(temperature=0.0,
                               max_new_tokens=EVAL.max_new_tokens), EVAL.seed, ids,
                               task.stop_strings)
      sampled = engine.generate(params, prompts, SamplingConfig(
          num_samples=2, temperature=1.0, top_k=0, top_p=0.95,
          max_new_tokens=EVAL.max_new_tokens), EVAL.seed + 2, ids, task.stop_strings)
      rewards = np.asarray([[task.reward({}, c.text) for c in row] for row in sampled])
      result = summary[task.name]
      self.assertBetween(rewards.mean(), 0.25, 0.75)  # Mixed, so equality below says something.
      greedy_rewards = [task.reward({}, row[0].text) for row in greedy]
      self.assertEqual(result["test_pass@1"], np.mean(greedy_rewards))
      # Records with a difficulty level: greedy pass@1 per level (one problem each here).
      self.assertEqual(result["test_pass@1_by_level"],
                       {"Level 0": greedy_rewards[0], "Level 1": greedy_rewards[1]})
      self.assertEqual(result["pass@k_curve"], [result["pass@k"]["1"], result["pass@k"]["2"]])
      self.assertAlmostEqual(result["pass@k"]["1"], rewards.mean())
      self.assertAlmostEqual(result["pass@k"]["2"], np.mean(
          [metrics.pass_at_k(2, int(c), 2) for c in rewards.sum(axis=1)]))

      with open(os.path.join(work, "restem_gsm8k", "metrics.json"), "w") as f:
        json.dump({"marker": 1}, f)
      again = transfer.evaluate_tasks(engine, ckpt, ["restem_gsm8k"], work, EVAL,
                                      data_dir=FOLDERS)
      self.assertEqual(again["restem_gsm8k"], {"marker": 1})  # Finished tasks are skipped.


if __name__ == "__main__":
  absltest.main()
