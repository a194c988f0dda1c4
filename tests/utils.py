"""Tiny random models shared by the test suites."""

import functools

import jax
import numpy as np

from restem_jax.engine import params as P
from restem_jax.engine import partitioning
from restem_jax.engine.config import ModelConfig
from restem_jax.engine.model import Decoder

TINY = ModelConfig(vocab_size=128, embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=1,
                   head_dim=16, mlp_dim=128)


@functools.lru_cache(maxsize=None)
def tiny_params(cfg: ModelConfig = TINY, seed: int = 0):
  """Random parameters on one device, cached: compiling init costs seconds on CPU."""
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  return P.init_params(Decoder(cfg), jax.random.PRNGKey(seed), mesh, partitioning.DEFAULT_RULES)


def random_prompts(n: int, vocab: int, low: int = 3, high: int = 20, seed: int = 0):
  rng = np.random.default_rng(seed)
  return [rng.integers(1, vocab, rng.integers(low, high)).tolist() for _ in range(n)]
