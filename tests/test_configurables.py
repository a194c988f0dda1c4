"""Gin binds at the edge only: names gin files use, bindings honoured, strays refused."""

import os
import tempfile

import gin
from absl.testing import absltest

from restem_jax import configurables
from restem_jax.checkpoint_io.checkpoints import CheckpointError
from restem_jax.engine.config import ConfigError, ModelConfig
from restem_jax.restem.loop import RestemConfig

MICRO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "micro.gin")


class ConfigurablesTest(absltest.TestCase):

  def tearDown(self):
    gin.clear_config()
    super().tearDown()

  def test_builds_plain_library_objects(self):
    gin.parse_config(["ModelConfig.num_layers = 3", "RestemConfig.iterations = 7"])
    model = configurables.build(ModelConfig)
    self.assertIs(type(model), ModelConfig)  # Not a gin subclass: equality and hashing hold.
    self.assertEqual(model, ModelConfig(num_layers=3))
    self.assertEqual(configurables.build(RestemConfig).iterations, 7)

  def test_sampling_config_cannot_be_bound(self):
    # E-step sampling follows RestemConfig; a stray SamplingConfig binding must not be silent.
    with self.assertRaisesRegex(ValueError, "SamplingConfig"):
      gin.parse_config(["SamplingConfig.top_p = 0.5"])

  def test_mesh_bindings_apply_without_binding_run_mesh_config(self):
    import jax  # pylint: disable=import-outside-toplevel
    import tests.micro_task  # noqa: F401  pylint: disable=import-outside-toplevel
    too_many = len(jax.devices()) + 1
    gin.parse_config_files_and_bindings([MICRO], [f"MeshConfig.data = {too_many}"])
    with self.assertRaisesRegex(ConfigError, f"data={too_many}"):
      configurables.run(tempfile.mkdtemp())

  def test_wrong_types_and_ranges_fail_at_parse_naming_the_binding(self):
    for binding, message in (
        ("RestemConfig.iterations = 'two'", "RestemConfig.iterations='two' must be an int"),
        ("RestemConfig.num_samples = 2.5", "RestemConfig.num_samples=2.5 must be an int"),
        ("RestemConfig.num_samples = 0", "RestemConfig.num_samples=0 must be >= 1"),
        ("EvalConfig.pass_ks = (1, '4')", r"EvalConfig.pass_ks=\(1, '4'\) must be a tuple"),
        ("EvalConfig.pass_top_p = 1.5", "pass_top_p=1.5 must be in"),
        ("FinetuneConfig.batch_size = 0", "FinetuneConfig.batch_size=0 must be >= 1"),
        ("FinetuneConfig.grad_accum_steps = 0", "FinetuneConfig.grad_accum_steps=0 must be >= 1"),
        ("FinetuneConfig.grad_accum_steps = 3",  # The default batch_size is 32.
         r"FinetuneConfig.batch_size=32 is not divisible by FinetuneConfig.grad_accum_steps=3"
         r".* one of \[1, 2, 4, 8, 16, 32\], or batch_size to a multiple of 3"),
        ("OptimizerConfig.warmup_steps = -1", "warmup_steps=-1 must be >= 0"),
        ("ModelConfig.remat = 'yes'", "ModelConfig.remat='yes' must be True or False")):
      with self.subTest(binding):
        gin.clear_config()
        gin.parse_config([binding])
        with self.assertRaisesRegex(ConfigError, message):
          configurables.validate()

  def test_a_named_base_checkpoint_must_exist(self):
    import tests.micro_task  # noqa: F401  pylint: disable=import-outside-toplevel
    missing = os.path.join(tempfile.mkdtemp(), "typo")
    gin.parse_config_files_and_bindings([MICRO], [f"run.base_checkpoint = '{missing}'"])
    with self.assertRaisesRegex(CheckpointError, "names no checkpoint.*check the path"):
      configurables.run(tempfile.mkdtemp())
    self.assertFalse(os.path.exists(missing))  # No base was trained there.

  def test_library_layers_do_not_import_gin(self):
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "restem_jax")
    for layer in ("engine", "restem", "checkpoint_io", "tasks", "rewards"):
      for name in os.listdir(os.path.join(root, layer)):
        if name.endswith(".py"):
          with open(os.path.join(root, layer, name)) as f:
            self.assertNotIn("import gin", f.read(), f"{layer}/{name}")


if __name__ == "__main__":
  absltest.main()
