"""Meshes 1x8, 2x4, 8x1 (and FSDP, and other rules) give one device's loss, gradients (also in
microbatches), greedy and sampled tokens, through one Engine whose restored parameters have the
shardings its jits expect; the sampling layout samples what the training layout samples."""

import os
import subprocess
import sys
import tempfile

import numpy as np
from absl.testing import absltest

MESHES = {"single": (1, 1, 1, "default"), "1x8": (1, 1, 8, "default"),
          "2x4": (2, 1, 4, "default"), "8x1": (8, 1, 1, "default"),
          "fsdp8": (1, 8, 1, "default"), "2x2x2": (2, 2, 2, "default"),
          "2x2x2_custom_rules": (2, 2, 2, "custom")}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ShardingTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.results = {}
    tmp = tempfile.mkdtemp()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    for name, shape in MESHES.items():
      path = os.path.join(tmp, f"{name}.npz")
      subprocess.run([sys.executable, "-m", "tests.sharding_worker", *map(str, shape), path],
                     check=True, env=env, cwd=ROOT)
      cls.results[name] = dict(np.load(path))

  def test_same_loss_gradients_greedy_and_sampled_tokens(self):
    ref = self.results["single"]
    for name in MESHES:
      with self.subTest(mesh=name):
        got = self.results[name]
        np.testing.assert_allclose(got["loss"], ref["loss"], rtol=1e-5)
        np.testing.assert_allclose(got["step_loss"], ref["step_loss"], rtol=1e-5)
        np.testing.assert_allclose(got["accum_loss"], ref["loss"], rtol=1e-5)
        grads = sorted(k for k in ref if k.startswith("grad_"))
        for key in grads:
          np.testing.assert_allclose(got[key], ref[key], atol=1e-5, rtol=1e-4, err_msg=key)
          # In microbatches, each device keeping its own rows: the same gradient.
          np.testing.assert_allclose(got["accum_" + key], ref[key], atol=1e-5, rtol=1e-4,
                                     err_msg="accum_" + key)
        np.testing.assert_array_equal(got["tokens"], ref["tokens"])
        np.testing.assert_array_equal(got["sampled"], ref["sampled"])
        np.testing.assert_array_equal(got["sampled_lengths"], ref["sampled_lengths"])

  def test_restored_shardings_are_the_ones_sampler_and_trainer_expect(self):
    for name in MESHES:
      self.assertTrue(bool(self.results[name]["shardings_agree"]), name)

  def test_the_sampling_layout_samples_what_the_training_layout_samples(self):
    for name in MESHES:
      with self.subTest(mesh=name):
        got = self.results[name]
        self.assertTrue(bool(got["sampling_replicated"]))
        np.testing.assert_array_equal(got["tokens"], got["in_place_tokens"])
        np.testing.assert_array_equal(got["sampled"], got["in_place_sampled"])
        np.testing.assert_array_equal(got["sampled_lengths"], got["in_place_lengths"])
        np.testing.assert_allclose(got["logprobs"], got["in_place_logprobs"], atol=1e-5)

  def test_parameters_are_really_sharded(self):
    self.assertEqual(int(self.results["single"]["sharded_params"]), 0)
    for name in ("1x8", "2x4", "fsdp8", "2x2x2", "2x2x2_custom_rules"):
      self.assertGreater(int(self.results[name]["sharded_params"]), 3, name)


class MeshErrorTest(absltest.TestCase):

  def test_mesh_that_does_not_match_the_devices(self):
    import jax
    from restem_jax.engine import partitioning
    from restem_jax.engine.config import ConfigError
    n = len(jax.devices())
    with self.assertRaisesRegex(ConfigError, rf"= {2 * n} devices, but {n} are available"):
      partitioning.make_mesh(partitioning.MeshConfig(data=2 * n, fsdp=1, tensor=1))
    with self.assertRaisesRegex(ConfigError, "at most one of data/fsdp/tensor may be -1"):
      partitioning.make_mesh(partitioning.MeshConfig(data=-1, fsdp=-1))


if __name__ == "__main__":
  absltest.main()
