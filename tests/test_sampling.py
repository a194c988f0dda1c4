"""Choosing a token: top-p without sorting equals the sorted definition, in its set and in law."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from scipy import stats

from restem_jax.engine.sampling import SamplingConfig, choose, inverse_cdf, nucleus

QWEN_VOCAB = 151_936  # Not a multiple of the draw's 256-token blocks: the last one is padded.


def sorted_nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
  """The textbook top-p set: the shortest prefix of the sorted vocabulary reaching top_p."""
  order = np.argsort(-probs, kind="stable")
  ranked = probs[order].astype(np.float64)  # A float32 running sum drifts over 50k terms.
  before = np.cumsum(ranked) - ranked
  kept = np.zeros(probs.shape, bool)
  kept[order[before < top_p]] = True
  return kept


def frequencies(logits: np.ndarray, config: SamplingConfig, draws: int,
                seed: int = 0) -> np.ndarray:
  keys = jax.random.split(jax.random.PRNGKey(seed), draws)
  tokens = jax.jit(jax.vmap(lambda k: choose(jnp.asarray(logits), k, config)))(keys)
  return np.bincount(np.asarray(tokens), minlength=logits.shape[-1])


class NucleusTest(parameterized.TestCase):

  @parameterized.parameters(0.05, 0.3, 0.5, 0.9, 0.95, 0.999)
  def test_kept_set_equals_the_sorted_prefix(self, top_p):
    rng = np.random.default_rng(int(top_p * 1000))
    for vocab, scale in ((50, 1.0), (1000, 3.0), (49152, 2.0)):
      logits = rng.normal(size=(4, vocab)) * scale
      probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1))
      kept = np.asarray(nucleus(jnp.asarray(probs), top_p))
      for row in range(4):
        np.testing.assert_array_equal(kept[row], sorted_nucleus(probs[row], top_p),
                                      f"vocab {vocab}, row {row}")

  def test_a_dominant_token_is_kept_alone_and_ties_are_kept_whole(self):
    probs = jnp.asarray([0.05, 0.8, 0.05, 0.1])
    self.assertEqual(np.asarray(nucleus(probs, 0.5)).tolist(), [False, True, False, False])
    tied = jnp.asarray([0.25, 0.25, 0.25, 0.25])
    self.assertTrue(np.all(nucleus(tied, 0.3)))  # Which of the ties would be arbitrary.

  @parameterized.parameters((8, 0.8, 1.0), (600, 0.9, 1.3), (600, 1.0, 0.7))
  def test_draws_follow_the_renormalised_nucleus(self, vocab, top_p, temperature):
    rng = np.random.default_rng(vocab)
    logits = rng.normal(size=vocab).astype(np.float32) * 2
    config = SamplingConfig(temperature=temperature, top_k=0, top_p=top_p)
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits) / temperature)).astype(np.float64)
    expected = np.where(sorted_nucleus(probs, top_p), probs, 0.0)
    expected /= expected.sum()
    draws = 40000
    seen = frequencies(logits, config, draws)
    self.assertEqual(seen[expected == 0].sum(), 0)  # Nothing outside the nucleus.
    # Chi-square over the tokens expected at least 5 times, the rest pooled.
    big = expected * draws >= 5
    observed = np.append(seen[big], seen[~big].sum())
    wanted = np.append(expected[big], expected[~big].sum()) * draws
    keep = wanted > 0
    wanted = wanted[keep] * observed[keep].sum() / wanted[keep].sum()
    statistic, p_value = stats.chisquare(observed[keep], wanted)
    self.assertGreater(p_value, 1e-4, (statistic, keep.sum()))
    self.assertGreater((seen > 0).sum(), 1)

  def test_top_k_path_is_unchanged(self):
    # E-step draws (top-k 40) use the same keys and law as before: categorical over the top k.
    logits = np.random.default_rng(0).normal(size=300).astype(np.float32)
    config = SamplingConfig(temperature=0.7, top_k=40)
    key = jax.random.PRNGKey(3)
    values, indices = jax.lax.top_k(jnp.asarray(logits) / 0.7, 40)
    expected = int(indices[jax.random.categorical(key, values)])
    self.assertEqual(int(choose(jnp.asarray(logits), key, config)), expected)


class InverseCdfTest(absltest.TestCase):
  """Every draw is a token of positive weight: in the nucleus and in the vocabulary."""

  def masked_nucleus(self, seed: int, top_p: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=QWEN_VOCAB).astype(np.float32) * 3
    logits[rng.random(QWEN_VOCAB) < 0.3] = -np.inf  # E.g. tokens a grammar forbids.
    probs = jax.nn.softmax(jnp.asarray(logits))
    return np.array(jnp.where(nucleus(probs, top_p), probs, 0.0))

  def assert_positive_draws(self, weights: np.ndarray, us: np.ndarray) -> None:
    drawn = np.asarray(jax.jit(jax.vmap(lambda u: inverse_cdf(jnp.asarray(weights), u)))(
        jnp.asarray(us)))
    self.assertTrue(np.all(drawn < len(weights)), drawn.max())
    self.assertTrue(np.all(weights[drawn] > 0),
                    f"{np.sum(weights[drawn] == 0)} of {len(us)} draws have weight 0")

  def test_uniforms_on_block_boundaries(self):
    # u at each 256-token block's end (as a fraction of the total) and its float
    # neighbours: where a block's prefix sum and the blocks' running sum disagree.
    weights = self.masked_nucleus(seed=0, top_p=0.9)
    ends = np.asarray(jnp.cumsum(jnp.asarray(
        np.pad(weights, (0, -len(weights) % 256)).reshape(-1, 256).sum(-1))))
    us = [np.float32(end) / np.float32(ends[-1]) for end in ends]
    for _ in range(3):
      us += [np.nextafter(u, np.float32(0)) for u in us[-len(ends):]]
    us = np.clip(np.asarray(us, np.float32), 0, np.nextafter(np.float32(1), np.float32(0)))
    self.assert_positive_draws(weights, us)

  def test_a_zero_last_block_and_uniforms_near_one(self):
    weights = self.masked_nucleus(seed=1, top_p=0.95)
    weights[-300:] = 0  # The padded last block and the one before it hold no mass.
    us = np.nextafter(np.float32(1), np.float32(0)) - np.arange(4096, dtype=np.float32) * 2**-24
    self.assert_positive_draws(weights, us.astype(np.float32))

  def test_mass_only_in_the_padded_last_block(self):
    # A block's prefix sum may end below the block's sum: u near 1 then ran past
    # the last real token into the padding, an id >= V.
    top = np.nextafter(np.float32(1), np.float32(0))
    us = (top - np.arange(4096, dtype=np.float32) * 2**-24).astype(np.float32)
    for seed in range(8):
      rng = np.random.default_rng(seed)
      logits = np.full(QWEN_VOCAB, -np.inf, np.float32)
      logits[-128:-5] = rng.normal(size=123) * 2
      logits[-128:-5][rng.random(123) < 0.2] = -np.inf
      self.assert_positive_draws(np.asarray(jax.nn.softmax(jnp.asarray(logits))), us)

  def test_many_draws_stay_in_the_nucleus(self):
    logits = np.random.default_rng(2).normal(size=QWEN_VOCAB).astype(np.float32) * 3
    logits[np.random.default_rng(3).random(QWEN_VOCAB) < 0.3] = -np.inf
    config = SamplingConfig(temperature=1.0, top_k=0, top_p=0.9)
    kept = np.asarray(nucleus(jax.nn.softmax(jnp.asarray(logits)), 0.9))
    seen = sum(frequencies(logits, config, 250_000, seed) for seed in range(4))
    self.assertEqual(seen[~kept].sum(), 0)
    self.assertGreater((seen > 0).sum(), 1000)


if __name__ == "__main__":
  absltest.main()
