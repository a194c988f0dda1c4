"""What a sample is drawn under (`SamplingConfig`, `Stopping`) and how one token is chosen.

Choosing runs for every decode row at every step, so it must cost little
next to the model: top-k uses `lax.top_k`; top-p over the whole vocabulary
never sorts it (a threshold found by bisection, then an inverse-CDF draw).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

from restem_jax.engine.config import ConfigError

# Probabilities are floats in [0, 1]: their bit patterns, read as int32, are in
# [0, 0x3F800000] and ordered like the floats, so 30 halvings pin any threshold.
_BISECTION_STEPS = 30
_DRAW_BLOCK = 256


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How continuations are drawn. temperature=0 is greedy decoding."""
  num_samples: int = 1
  temperature: float = 0.7  # Paper, E-step: T=0.7, top-k 40, no top-p.
  top_k: int = 40  # 0 disables.
  top_p: float = 1.0  # 1.0 disables.
  max_new_tokens: int = 128

  def __post_init__(self):
    if self.num_samples < 1:
      raise ConfigError(f"SamplingConfig.num_samples={self.num_samples} must be >= 1.")
    if self.temperature < 0:
      raise ConfigError(f"SamplingConfig.temperature={self.temperature} must be >= 0 (0 = greedy).")
    if self.top_k < 0:
      raise ConfigError(f"SamplingConfig.top_k={self.top_k} must be >= 0 (0 = off).")
    if not 0.0 < self.top_p <= 1.0:
      raise ConfigError(f"SamplingConfig.top_p={self.top_p} must be in (0, 1] (1 = off).")
    if self.max_new_tokens < 1:
      raise ConfigError(f"SamplingConfig.max_new_tokens={self.max_new_tokens} must be >= 1.")


@dataclasses.dataclass(frozen=True)
class Stopping:
  """What ends a sample: any token in `eos_ids`, or any token sequence in `sequences`.

  A model may end a turn with several ids (Llama 3: <|end_of_text|> and
  <|eot_id|>); stop sequences end a completion before the model starts the
  next few-shot problem.
  """
  eos_ids: tuple[int, ...] = ()
  sequences: tuple[tuple[int, ...], ...] = ()

  @classmethod
  def of(cls, eos_ids: Sequence[int] = (), sequences: Sequence[Sequence[int]] = ()) -> "Stopping":
    return cls(tuple(int(i) for i in eos_ids),
               tuple(tuple(int(t) for t in s) for s in sequences if len(s)))


def nucleus(probs: jax.Array, top_p: float) -> jax.Array:
  """The top-p set of [..., V] probabilities as a mask, without sorting.

  The set is {p >= tau} for the largest tau whose set still holds mass
  top_p: exactly the shortest prefix of the sorted vocabulary that reaches
  top_p (ties at the boundary are kept whole). tau is bisected over the
  probabilities' bit patterns, one masked sum per halving.
  """
  bits = jax.lax.bitcast_convert_type(probs, jnp.int32)
  lo = jnp.zeros(probs.shape[:-1], jnp.int32)  # mass(p >= lo) >= top_p always holds.
  hi = jnp.max(bits, axis=-1) + 1  # mass(p >= hi) = 0 < top_p.

  def halve(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    enough = jnp.sum(jnp.where(bits >= mid[..., None], probs, 0.0), axis=-1) >= top_p
    return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

  lo, _ = jax.lax.fori_loop(0, _BISECTION_STEPS, halve, (lo, hi))
  return bits >= lo[..., None]


def _positive_at_or_before(weights: jax.Array, index: jax.Array) -> jax.Array:
  """The last position <= `index` whose weight is positive, else the first positive one.

  Float prefix sums round, and differently from the sums they are compared
  with: a uniform that lands on a boundary or past the last sum would pick a
  zero weight (a token masked out of the nucleus, or padding past the
  vocabulary). Snapping to a positive weight leaves every other draw alone.
  """
  positions = jnp.arange(weights.shape[-1])
  positive = weights > 0
  at_or_before = jnp.max(jnp.where(positive & (positions <= index), positions, -1))
  return jnp.where(at_or_before >= 0, at_or_before, jnp.argmax(positive))


def inverse_cdf(weights: jax.Array, u: jax.Array) -> jax.Array:
  """The index of [V] non-negative weights (not all 0) that a uniform u in [0, 1) selects.

  Two levels (blocks, then within the block) keep the prefix sums short; the
  result always has a positive weight, so it lies in [0, V).
  """
  v = weights.shape[-1]
  padded = jnp.pad(weights, (0, -v % _DRAW_BLOCK)).reshape(-1, _DRAW_BLOCK)
  block_mass = padded.sum(axis=-1)
  ends = jnp.cumsum(block_mass)
  target = u * ends[-1]
  block = _positive_at_or_before(block_mass, jnp.sum(ends <= target))
  start = jnp.where(block > 0, ends[block - 1], 0.0)
  inner = jnp.cumsum(padded[block])
  return block * _DRAW_BLOCK + _positive_at_or_before(padded[block],
                                                      jnp.sum(inner <= target - start))


def choose(logits: jax.Array, key: jax.Array, config: SamplingConfig) -> jax.Array:
  """Draws one token from [V] logits according to the config."""
  if config.temperature == 0:
    return jnp.argmax(logits).astype(jnp.int32)
  logits = logits / config.temperature
  if config.top_k:
    # top_k returns its values sorted, so the top-p prefix is a cumulative sum away.
    values, indices = jax.lax.top_k(logits, min(config.top_k, logits.shape[-1]))
    if config.top_p < 1.0:
      probs = jax.nn.softmax(values)
      values = jnp.where(jnp.cumsum(probs) - probs < config.top_p, values, -jnp.inf)
    return indices[jax.random.categorical(key, values)].astype(jnp.int32)
  probs = jax.nn.softmax(logits)
  if config.top_p < 1.0:
    probs = jnp.where(nucleus(probs, config.top_p), probs, 0.0)
  return inverse_cdf(probs, jax.random.uniform(key, dtype=probs.dtype)).astype(jnp.int32)


def draw(logits: jax.Array, row_keys: jax.Array, t: jax.Array, config: SamplingConfig
         ) -> tuple[jax.Array, jax.Array]:
  """Step t's token for every row of [..., V] logits, and its log-prob under the untruncated model.

  row_keys [..., 2] and t [...] (or a scalar): a row's token depends only on its key and t.
  """
  batch = logits.shape[:-1]
  flat_keys = row_keys.reshape(-1, 2)
  steps = jnp.broadcast_to(t, batch).reshape(-1)
  step_keys = jax.vmap(jax.random.fold_in)(flat_keys, steps.astype(jnp.uint32))
  flat_logits = logits.reshape(-1, logits.shape[-1])
  token = jax.vmap(lambda lg, k: choose(lg, k, config))(flat_logits, step_keys)
  logprob = jnp.take_along_axis(jax.nn.log_softmax(flat_logits), token[:, None], -1)[:, 0]
  return token.reshape(batch), logprob.reshape(batch)
