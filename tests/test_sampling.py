"""Choosing a token: top-p without sorting equals the sorted definition, in its set and in law."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from scipy import stats

from restem_jax.engine.sampling import SamplingConfig, choose, nucleus


def sorted_nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
  """The textbook top-p set: the shortest prefix of the sorted vocabulary reaching top_p."""
  order = np.argsort(-probs, kind="stable")
  ranked = probs[order].astype(np.float64)  # A float32 running sum drifts over 50k terms.
  before = np.cumsum(ranked) - ranked
  kept = np.zeros(probs.shape, bool)
  kept[order[before < top_p]] = True
  return kept


def frequencies(logits: np.ndarray, config: SamplingConfig, draws: int) -> np.ndarray:
  keys = jax.random.split(jax.random.PRNGKey(0), draws)
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


if __name__ == "__main__":
  absltest.main()
