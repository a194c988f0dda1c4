"""Top-p without sorting, checked on a real model's logits (not a speed benchmark).

For every prompt position of a few prompts: the kept set of
`sampling.nucleus` must equal the shortest prefix of the sorted vocabulary
that reaches top_p (ties at the boundary kept whole), at T=1.0 and 0.7. Then,
for a few positions, `sampling.choose` is drawn many times and compared with
the renormalised nucleus by a chi-square test.

  python benchmarks/check_top_p.py --checkpoint=/tmp/smollm2/base
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from scipy import stats

from restem_jax.checkpoint_io.loading import load_model
from restem_jax.engine.sampling import SamplingConfig, choose, nucleus

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A converted checkpoint directory.",
                                  required=True)
_TOP_P = flags.DEFINE_float("top_p", 0.95, "The nucleus mass.")
_DRAWS = flags.DEFINE_integer("draws", 40_000, "Draws per position for the chi-square test.")
_PROMPTS = ("Mia has 14 marbles. Mia gives away 8 marbles. How many marbles does Mia have now?",
            "The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far")


def _logits() -> np.ndarray:
  """[positions, vocab] logits at every prompt position."""
  model = load_model(_CHECKPOINT.value)
  ids = [model.engine.encode_prompt(p) for p in _PROMPTS]
  tokens = np.zeros((len(ids), max(map(len, ids))), np.int32)
  valid = np.zeros(tokens.shape, bool)
  for i, row in enumerate(ids):
    tokens[i, :len(row)], valid[i, :len(row)] = row, True
  return model.logits(tokens, valid)[valid]


def _sorted_nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
  order = np.argsort(-probs, kind="stable")
  size = int(np.searchsorted(np.cumsum(probs[order].astype(np.float64)), top_p) + 1)
  return probs >= probs[order[size - 1]]


def main(argv):
  del argv
  logits, top_p = _logits(), _TOP_P.value
  sizes, mismatches = [], 0
  for temperature in (1.0, 0.7):
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits / temperature), axis=-1))
    for row, mask in zip(probs, np.asarray(nucleus(jnp.asarray(probs), top_p))):
      mismatches += not np.array_equal(mask, _sorted_nucleus(row, top_p))
      sizes.append(int(mask.sum()))
  print(f"kept sets: {len(sizes)} positions, {mismatches} differ from the sorted reference; "
        f"sizes {min(sizes)} / {int(np.median(sizes))} / {max(sizes)} (min / median / max)")

  config = SamplingConfig(num_samples=1, temperature=1.0, top_k=0, top_p=top_p,
                          max_new_tokens=1)
  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
  masks = np.asarray(nucleus(jnp.asarray(probs), top_p))
  n = _DRAWS.value
  for i in [i for i in range(len(logits)) if 5 <= masks[i].sum() <= 300][:3]:
    keys = jax.random.split(jax.random.PRNGKey(i), n)
    draws = np.asarray(jax.jit(jax.vmap(lambda k, i=i: choose(jnp.asarray(logits[i]), k,
                                                              config)))(keys))
    kept = np.flatnonzero(masks[i])
    outside = int((~np.isin(draws, kept)).sum())
    p = probs[i][kept].astype(np.float64)
    expected = p / p.sum() * n
    observed = np.array([(draws == k).sum() for k in kept], np.float64)
    big = expected >= 5  # Rare tokens pooled into one cell, as the test requires.
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    obs, exp = (obs, exp) if exp[-1] > 0 else (obs[:-1], exp[:-1])
    pvalue = stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue
    print(f"position {i}: {len(kept)} kept tokens, {n} draws, {outside} outside the nucleus, "
          f"chi-square p = {pvalue:.3f}")


if __name__ == "__main__":
  app.run(main)
