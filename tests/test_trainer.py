"""The fine-tuning step: target-only reward-weighted NLL, optimizers, accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from restem_jax.engine import partitioning
from restem_jax.engine.config import ConfigError
from restem_jax.engine.params import place
from restem_jax.engine.model import Decoder
from restem_jax.engine.trainer import (OptimizerConfig, Trainer, learning_rate_schedule,
                                       token_logprobs, trim_padding, weighted_nll,
                                       with_target_positions)
from tests.utils import TINY, tiny_params

MESH = partitioning.make_mesh(devices=jax.devices()[:1])


def make_batch(rows=4, length=12, prompt=5, seed=0):
  rng = np.random.default_rng(seed)
  target_mask = np.zeros((rows, length), np.float32)
  target_mask[:, prompt:] = 1
  return {"tokens": rng.integers(1, TINY.vocab_size, (rows, length)).astype(np.int32),
          "target_mask": target_mask, "valid": np.ones((rows, length), bool),
          "reward": np.ones(rows, np.float32)}


def rows(batch, index):
  return {k: v[index] for k, v in batch.items()}


def leaves_close(a, b, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)


def first_moments(state) -> list:
  adam = lambda s: isinstance(s, optax.ScaleByAdamState)
  return [s.mu for s in jax.tree.leaves(state.opt_state, is_leaf=adam) if adam(s)]


class TrainerTest(parameterized.TestCase):

  @parameterized.parameters("adafactor", "adamw")
  def test_overfits_a_tiny_dataset(self, name):
    trainer = Trainer(TINY, OptimizerConfig(name=name, learning_rate=3e-3), MESH)
    state = trainer.init_state(tiny_params())
    batch = make_batch()
    first = trainer.loss(state.params, batch)
    for _ in range(40):
      state, metrics = trainer.step(state, batch)
    self.assertGreater(first, 3.0)
    self.assertLess(metrics["loss"], 0.1 * first)
    self.assertEqual(int(state.step), 40)
    self.assertEqual(metrics["target_tokens"], 4 * 7)

  def test_padding_columns_are_trimmed_without_changing_the_step(self):
    batch = make_batch(rows=4, length=64)
    batch["valid"][:, 20:] = False  # Rows of 20 tokens padded to 64; one of 17.
    batch["valid"][1, 17:] = False
    self.assertEqual(trim_padding(batch)["tokens"].shape, (4, 24))
    self.assertEqual(trim_padding(make_batch(rows=2, length=40))["tokens"].shape, (2, 40))
    left = make_batch(rows=2, length=64)
    left["valid"][:, :50] = False  # Left padding: every column up to the end is used.
    self.assertEqual(trim_padding(left)["valid"].shape, (2, 64))
    trainer = Trainer(TINY, OptimizerConfig(name="adamw", learning_rate=1e-3), MESH)
    state = trainer.init_state(tiny_params())
    trimmed, metrics = trainer.step(state, batch)
    untrimmed = {k: jnp.asarray(v) for k, v in with_target_positions(batch).items()}
    whole, whole_metrics = trainer._step(trainer.init_state(tiny_params()), untrimmed)
    self.assertAlmostEqual(metrics["loss"], float(whole_metrics["loss"]), places=5)
    leaves_close(trimmed.params, whole.params, atol=1e-6)

  def test_head_at_target_positions_equals_the_full_loss(self):
    # Rows with different prompt lengths and one padded row: the loss and its
    # gradient from the head at target positions only equal those over every position.
    batch = make_batch(rows=3, length=12)
    batch["target_mask"][0, :8] = 0
    batch["valid"][2, 9:] = False
    batch["reward"][1] = 0.5
    compact = with_target_positions(batch)
    self.assertEqual(compact["at"].shape, (3, 8))  # 4 targets in row 0 (7 in row 1), rounded up to 8.
    # 11 targets a row: 16 wide by the granule, capped at the 11 positions there are.
    self.assertEqual(with_target_positions(make_batch(rows=2, length=12, prompt=1))["at"].shape,
                     (2, 11))
    np.testing.assert_array_equal(compact["at"][0, :4], [7, 8, 9, 10])
    self.assertEqual(compact["at_weight"][0].sum(), 4)
    model, params = Decoder(TINY), tiny_params()

    def full(p):  # The loss written out over all next-token positions.
      logprobs = token_logprobs(model, p, batch["tokens"], batch["valid"])
      weight = batch["target_mask"][:, 1:] * batch["valid"][:, 1:] * batch["reward"][:, None]
      return jnp.sum(-logprobs * weight), jnp.sum(weight)

    for terms in (full, lambda p: weighted_nll(model, p, compact),
                  lambda p: weighted_nll(model, p, batch)):
      (total, weight), grads = jax.value_and_grad(terms, has_aux=True)(params)
      if terms is full:
        reference = (float(total), float(weight), grads)
        continue
      self.assertAlmostEqual(float(total), reference[0], places=4)
      self.assertEqual(float(weight), reference[1])
      leaves_close(grads, reference[2], atol=1e-5)

  def test_reward_zero_sample_contributes_nothing(self):
    trainer = Trainer(TINY, OptimizerConfig(name="adamw", learning_rate=1e-2), MESH)
    batch = make_batch(rows=2, seed=3)
    weighted = dict(batch, reward=np.asarray([1.0, 0.0], np.float32))
    with_zero, m1 = trainer.step(trainer.init_state(tiny_params()), weighted)
    alone, m2 = trainer.step(trainer.init_state(tiny_params()), rows(batch, slice(0, 1)))
    self.assertAlmostEqual(m1["loss"], m2["loss"], places=5)
    leaves_close(with_zero.params, alone.params, atol=1e-6)
    # ...while a rewarded second row does change the update.
    both, _ = trainer.step(trainer.init_state(tiny_params()), batch)
    self.assertGreater(max(float(jnp.abs(x - y).max()) for x, y in
                           zip(jax.tree.leaves(both.params), jax.tree.leaves(alone.params))), 1e-4)

  def test_gradient_accumulation_matches_one_big_batch(self):
    batch = make_batch(rows=4, seed=5)
    batch["target_mask"][0, 5:9] = 0  # Uneven token counts across microbatches.
    config = OptimizerConfig(name="adamw", learning_rate=1e-2)
    one, m1 = Trainer(TINY, config, MESH).step(
        Trainer(TINY, config, MESH).init_state(tiny_params()), batch)
    accum = Trainer(TINY, config, MESH, grad_accum_steps=2)
    two, m2 = accum.step(accum.init_state(tiny_params()), batch)
    self.assertAlmostEqual(m1["loss"], m2["loss"], places=5)
    # Adam's first step is about lr * sign(gradient), which turns float noise in a near-zero
    # gradient into a full step: compare the gradients Adam saw (its first moments).
    leaves_close(first_moments(one), first_moments(two), atol=1e-7)
    with self.assertRaisesRegex(ConfigError, "not divisible by grad_accum_steps=2"):
      accum.step(accum.init_state(tiny_params()), rows(batch, slice(0, 3)))

  @parameterized.parameters(2, 4, 8)
  def test_microbatch_loss_and_gradients_equal_the_unsplit_batch(self, steps):
    batch = make_batch(rows=8, length=16, seed=7)
    batch["target_mask"][1, 5:12] = 0  # Uneven target counts across microbatches.
    batch["valid"][2, 10:] = False
    batch["reward"][3] = 0.0
    config = OptimizerConfig(name="adamw", learning_rate=1e-2, max_grad_norm=0.0)
    loss, grads = Trainer(TINY, config, MESH).gradients(tiny_params(), batch)
    split = Trainer(TINY, config, MESH, grad_accum_steps=steps)
    got_loss, got_grads = split.gradients(tiny_params(), batch)
    self.assertAlmostEqual(got_loss, loss, delta=1e-5)
    leaves_close(got_grads, grads, atol=1e-5)
    # The train step computes what gradients() does: its loss, and its first moments
    # (AdamW's first step: (1 - b1) x the gradient).
    state, metrics = split.step(split.init_state(tiny_params()), batch)
    self.assertAlmostEqual(metrics["loss"], loss, delta=1e-5)
    (moments,) = first_moments(state)
    leaves_close(jax.tree.map(lambda m: m / (1 - config.b1), moments), grads, atol=1e-5)

  def test_bf16_compute_with_fp32_master_weights(self):
    cfg = TINY.__class__(**{**TINY.__dict__, "dtype": "bfloat16"})
    trainer = Trainer(cfg, OptimizerConfig(learning_rate=3e-3), MESH)
    state = trainer.init_state(tiny_params())
    for _ in range(20):
      state, metrics = trainer.step(state, make_batch())
    self.assertTrue(all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params)))
    self.assertLess(metrics["loss"], 2.0)

  def test_step_does_not_consume_the_callers_params(self):
    params = tiny_params()
    trainer = Trainer(TINY, OptimizerConfig(), MESH)
    trainer.step(trainer.init_state(params), make_batch())
    self.assertTrue(np.isfinite(float(params["embedding"].sum())))  # Not donated.

  def test_donated_params_are_the_state(self):
    trainer = Trainer(TINY, OptimizerConfig(), MESH)
    # A copy: tiny_params() is cached and shared with the other tests.
    params = place(jax.tree.map(np.array, tiny_params()), trainer.param_shardings)
    trainer.step(trainer.init_state(params, donate=True), make_batch())
    self.assertTrue(params["embedding"].is_deleted())  # No copy was made.

  def test_schedules(self):
    warm = OptimizerConfig(learning_rate=1.0, warmup_steps=10, schedule="cosine", decay_steps=110)
    lr = learning_rate_schedule(warm)
    self.assertAlmostEqual(float(lr(0)), 0.1, places=5)
    self.assertAlmostEqual(float(lr(9)), 1.0, places=5)
    self.assertAlmostEqual(float(lr(60)), 0.5, places=2)
    self.assertAlmostEqual(float(lr(200)), 0.0, places=5)
    with self.assertRaisesRegex(ConfigError, "name='sgd'"):
      OptimizerConfig(name="sgd")


if __name__ == "__main__":
  absltest.main()
