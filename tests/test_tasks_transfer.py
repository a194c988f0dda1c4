"""Transfer evaluation: a tiny checkpoint evaluated on GSM8K and HumanEval fixtures."""

import json
import os
import tempfile

import gin
import jax
from absl.testing import absltest

from restem_jax import checkpoints, partitioning, transfer  # noqa: F401
from restem_jax.config import ModelConfig
from restem_jax.model import Decoder
from restem_jax.params import init_params

FOLDERS = os.path.join(os.path.dirname(__file__), "fixtures", "folders")
TINY = """
ModelConfig.vocab_size = 264
ModelConfig.embed_dim = 32
ModelConfig.num_layers = 1
ModelConfig.num_heads = 2
ModelConfig.num_kv_heads = 1
ModelConfig.head_dim = 16
ModelConfig.mlp_dim = 64
RestemConfig.max_prompt_len = 2048
RestemConfig.sample_batch = 4
EvalConfig.pass_k_samples = 2
EvalConfig.pass_ks = (1, 2)
EvalConfig.maj_ks = (2,)
EvalConfig.max_new_tokens = 16  # >= the longest stop string in tokens (sampler limit)
"""


class TransferTest(absltest.TestCase):

  def tearDown(self):
    gin.clear_config()
    super().tearDown()

  def test_writes_loop_metrics_per_task_and_resumes(self):
    from restem_jax import loop  # noqa: F401  pylint: disable=import-outside-toplevel
    gin.parse_config(TINY)
    model = ModelConfig()
    mesh_config = partitioning.MeshConfig()
    mesh = partitioning.make_mesh(mesh_config)
    with tempfile.TemporaryDirectory() as tmp:
      ckpt = os.path.join(tmp, "ckpt")
      checkpoints.save(ckpt, init_params(Decoder(model), jax.random.PRNGKey(0), mesh,
                                         mesh_config.rules))
      work = os.path.join(tmp, "transfer")
      os.makedirs(work)
      summary = transfer.evaluate_tasks(ckpt, ["restem_gsm8k", "restem_humaneval"], work,
                                        data_dir=FOLDERS, max_test=2)
      self.assertEqual(set(summary), {"restem_gsm8k", "restem_humaneval"})
      for name in summary:
        with open(os.path.join(work, name, "metrics.json")) as f:
          metrics = json.load(f)
        self.assertEqual(metrics["num_problems"], 2)
        self.assertEqual(set(metrics["pass@k"]), {"1", "2"})
        self.assertEqual(set(metrics["maj@k"]), {"2"})
        self.assertBetween(metrics["test_pass@1"], 0.0, 1.0)
      with open(os.path.join(work, "restem_gsm8k", "metrics.json"), "w") as f:
        json.dump({"marker": 1}, f)
      again = transfer.evaluate_tasks(ckpt, ["restem_gsm8k"], work, data_dir=FOLDERS)
      self.assertEqual(again["restem_gsm8k"], {"marker": 1})  # Finished tasks are skipped.


if __name__ == "__main__":
  absltest.main()
