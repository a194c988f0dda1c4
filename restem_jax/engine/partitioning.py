"""Device mesh and logical-axis sharding (pjit via NamedSharding).

Modules name their axes logically ("embed", "mlp", "act_batch", ...); the
rules below map those names to mesh axes. A mesh axis that does not divide a
dimension is dropped for that array (it is replicated along it) so that, for
example, a single multi-query key/value head still runs on a tensor-parallel
mesh.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from restem_jax.engine.config import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

Rules = tuple[tuple[str, Any], ...]

# Parameters are sharded FSDP-style over their embed axis and Megatron-style
# over heads/mlp/vocab; activations over batch (data and fsdp) and tensor.
DEFAULT_RULES: Rules = (
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("act_batch", ("data", "fsdp")),
    ("act_samples", None),
    ("act_length", None),
    ("act_embed", None),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh shape over (data, fsdp, tensor); one entry may be -1 (the rest).

  Sampling runs on the same devices as (data, 1, sample_tensor): see
  `sampling_layout`. sample_tensor=0 picks the smallest split that fits.
  """
  data: int = -1
  fsdp: int = 1
  tensor: int = 1
  rules: Rules = DEFAULT_RULES
  sample_tensor: int = 0


def make_mesh(config: MeshConfig | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the mesh, failing with the field to change if it cannot fit."""
  config = config or MeshConfig()
  devices = list(devices if devices is not None else jax.devices())
  shape = [config.data, config.fsdp, config.tensor]
  if shape.count(-1) > 1:
    raise ConfigError(f"MeshConfig: at most one of data/fsdp/tensor may be -1, got {shape}.")
  for name, size in zip(MESH_AXES, shape):
    if size == 0 or size < -1:
      raise ConfigError(f"MeshConfig.{name}={size} must be >= 1 or -1.")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ConfigError(
          f"MeshConfig {dict(zip(MESH_AXES, shape))}: the fixed axes multiply to {known}, "
          f"which does not divide the {len(devices)} available devices. Choose sizes "
          f"whose product divides {len(devices)}.")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise ConfigError(
        f"MeshConfig data={shape[0]} x fsdp={shape[1]} x tensor={shape[2]} = "
        f"{math.prod(shape)} devices, but {len(devices)} are available. Make the "
        f"product equal {len(devices)}, or set one axis to -1 to take the rest.")
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


_CONTEXT: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar(
    "restem_jax_sharding", default=None)


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Makes `constrain` active while tracing functions for this mesh."""
  token = _CONTEXT.set((mesh, rules))
  try:
    yield
  finally:
    _CONTEXT.reset(token)


def spec_for(shape: Sequence[int], names: Sequence[str | None], mesh: Mesh,
             rules: Rules) -> PartitionSpec:
  """Logical names -> PartitionSpec, keeping only mesh axes that divide the dim."""
  table = dict(rules)
  used: set[str] = set()
  out = []
  for dim, name in zip(shape, names):
    axes = table.get(name) if name is not None else None
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    kept = []
    for axis in axes:
      size = mesh.shape[axis]
      if axis in used or size == 1 or dim % (math.prod(mesh.shape[a] for a in kept) * size):
        continue
      kept.append(axis)
    used.update(kept)
    out.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
  return PartitionSpec(*out)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """with_sharding_constraint by logical names; a no-op outside sharding_context."""
  context = _CONTEXT.get()
  if context is None:
    return x
  mesh, rules = context
  return jax.lax.with_sharding_constraint(
      x, NamedSharding(mesh, spec_for(x.shape, names, mesh, rules)))


def tree_shardings(abstract_tree: Any, names_tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for a tree of arrays given a matching tree of logical names."""
  return jax.tree.map(
      lambda x, names: NamedSharding(mesh, spec_for(x.shape, names, mesh, rules)),
      abstract_tree, names_tree,
      is_leaf=lambda n: isinstance(n, PartitionSpec))


def abstract_on(shapes: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying these shardings: inputs for ahead-of-time lowering."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      shapes, shardings)


def param_names(boxed_params: Any) -> Any:
  """Logical axis names of boxed Flax params, as PartitionSpecs of names."""
  return nn.get_partition_spec(boxed_params)


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """Rows of host batches split over the batch axes (data and fsdp, by the default rules)."""
  return NamedSharding(mesh, spec_for((mesh.shape["data"] * mesh.shape["fsdp"],), ("act_batch",),
                                      mesh, rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())
