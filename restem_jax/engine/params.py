"""Creating parameters and placing them on a mesh."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from restem_jax.engine import partitioning
from restem_jax.engine.model import Decoder

Params = Any


def _boxed_init(model: Decoder, rng: jax.Array) -> Params:
  tokens = jnp.zeros((1, 1, 1), jnp.int32)
  return model.init(rng, tokens, tokens, jnp.ones((1, 1, 1, 1), bool))["params"]


def _abstract_boxed(model: Decoder) -> Params:
  return jax.eval_shape(lambda r: _boxed_init(model, r), jax.random.PRNGKey(0))


def abstract_params(model: Decoder) -> Params:
  """Shapes and dtypes of the parameters, without allocating them."""
  return nn.meta.unbox(_abstract_boxed(model))


def param_names(model: Decoder) -> Any:
  """Logical axis names of every parameter, as PartitionSpecs of names."""
  return partitioning.param_names(_abstract_boxed(model))


def param_shardings(model: Decoder, mesh: Mesh, rules: partitioning.Rules) -> Any:
  """NamedSharding of every parameter, from its logical axis names."""
  return partitioning.tree_shardings(abstract_params(model), param_names(model), mesh, rules)


def init_params(model: Decoder, rng: jax.Array, mesh: Mesh,
                rules: partitioning.Rules) -> Params:
  """Random parameters, created directly in their shards (never whole on one host)."""
  shardings = param_shardings(model, mesh, rules)
  init = jax.jit(lambda r: nn.meta.unbox(_boxed_init(model, r)), out_shardings=shardings)
  return init(rng)


def place(params: Params, shardings: Any) -> Params:
  """Puts host or differently-placed parameters onto their shardings."""
  return jax.tree.map(jax.device_put, params, shardings)


def count(params: Params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
