"""Checkpoints are verified against the digests written at save before they are restored."""

import os
import tempfile

import jax
import numpy as np
from absl.testing import absltest

from restem_jax.checkpoint_io import checkpoints
from restem_jax.engine import partitioning
from restem_jax.engine.model import Decoder
from restem_jax.engine.params import abstract_params, param_shardings
from restem_jax.engine.trainer import OptimizerConfig, Trainer
from tests.utils import TINY, tiny_params


class VerifiedCheckpointTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.path = os.path.join(tempfile.mkdtemp(), "ckpt")
    self.params = tiny_params()
    checkpoints.save(self.path, self.params)
    model = Decoder(TINY)
    mesh = partitioning.make_mesh(devices=jax.devices()[:1])
    self.restore = lambda: checkpoints.restore(self.path, abstract_params(model),
                                               param_shardings(model, mesh,
                                                               partitioning.DEFAULT_RULES))

  def largest_file(self):
    root = os.path.join(self.path, checkpoints.PARAMS_SUBDIR)
    found = [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]
    return max(found, key=os.path.getsize)

  def test_intact_checkpoint_restores_exactly(self):
    restored = self.restore()
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(self.params)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  def test_a_train_state_restores_from_abstract_targets(self):
    trainer = Trainer(TINY, OptimizerConfig(name="adamw"),
                      partitioning.make_mesh(devices=jax.devices()[:1]))
    state = trainer.init_state(self.params)
    checkpoints.save(self.path, state)
    restored = checkpoints.restore(self.path, trainer.abstract_state(), trainer.state_shardings)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  def test_flipped_bytes_fail_naming_the_file(self):
    path = self.largest_file()
    with open(path, "r+b") as f:
      data = bytearray(f.read())
      middle = len(data) // 2
      data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
      f.seek(0)
      f.write(data)
    name = os.path.relpath(path, os.path.join(self.path, checkpoints.PARAMS_SUBDIR))
    with self.assertRaisesRegex(checkpoints.CheckpointError, rf"damaged: .*{name}"):
      self.restore()

  def test_a_missing_file_fails(self):
    os.remove(self.largest_file())
    with self.assertRaisesRegex(checkpoints.CheckpointError, "damaged"):
      self.restore()

  def test_a_checkpoint_without_digests_restores_with_a_warning(self):
    os.remove(os.path.join(self.path, checkpoints.DIGESTS))
    with self.assertLogs(level="WARNING") as logs:
      self.restore()
    self.assertIn("unverified", "\n".join(logs.output))


if __name__ == "__main__":
  absltest.main()
