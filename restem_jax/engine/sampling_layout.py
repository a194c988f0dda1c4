"""Where sampling keeps the parameters: a layout for decoding, not the trainer's.

The trainer shards parameters FSDP-style: a step gathers every weight once
for a whole batch of tokens, which pays for itself. A decode step makes one
token per lane, so the same layout would gather the whole model over the
interconnect for every token. The policy is frozen for a sampling call (an
E-step, an evaluation, a validation check), so its weights move once per call
into a mesh over the same devices without an fsdp axis: replicated within
data-parallel groups, split over `tensor` only as far as they must be to fit,
in the compute dtype, each layer's weights an array of their own (the
sampler's prefill and decode step both read them, so a call holds one copy).
The copy lives as long as the call.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from restem_jax.engine import params as P
from restem_jax.engine.config import ConfigError, ModelConfig
from restem_jax.engine.model import Decoder
from restem_jax.engine.partitioning import MESH_AXES

# Of a device's memory, what the sampling weights may take when the tensor
# split is chosen automatically: the rest holds the KV cache, the decode
# program's temporaries and, during an M-step's validation check, the train state.
WEIGHTS_SHARE = 0.4


def sampling_mesh(mesh: Mesh, model: ModelConfig, tensor: int = 0,
                  device_bytes: int | None = None) -> Mesh:
  """The training mesh's devices, in the same order, as (data, 1, tensor).

  tensor=0 takes the smallest split that fits `device_bytes` (`choose_tensor`).
  The same device order keeps one device assignment, so moving parameters
  between the two meshes is a resharding inside one program.
  """
  devices = np.asarray(mesh.devices).reshape(-1)
  tensor = tensor or choose_tensor(model, model.num_params, len(devices), device_bytes)
  if tensor < 1 or len(devices) % tensor:
    raise ConfigError(f"MeshConfig.sample_tensor={tensor} must divide the {len(devices)} "
                      f"devices; choose one of {_divisors(len(devices))} (0: chosen to fit).")
  return Mesh(devices.reshape(len(devices) // tensor, 1, tensor), MESH_AXES)


def choose_tensor(model: ModelConfig, num_params: int, num_devices: int,
                  device_bytes: int | None) -> int:
  """The smallest tensor split whose share of the compute-dtype weights fits a device.

  Without a known device memory (CPU) the weights are replicated on every device.
  """
  if not device_bytes:
    return 1
  weights = num_params * jnp.dtype(model.dtype).itemsize
  for tensor in _divisors(num_devices):
    if weights / tensor <= WEIGHTS_SHARE * device_bytes:
      return tensor
  return num_devices


def device_memory(mesh: Mesh) -> int | None:
  """A device's memory in bytes, where the runtime says (TPU and GPU do; CPU does not)."""
  try:
    stats = np.asarray(mesh.devices).reshape(-1)[0].memory_stats()
  except (RuntimeError, NotImplementedError):
    return None
  return (stats or {}).get("bytes_limit")


def for_decoding(model: ModelConfig, names: Any, params: Any) -> Any:
  """Parameters as decoding reads them: the model casts every weight to its compute dtype
  at use, so casting first changes no result; norm scales are read in float32 and stay."""
  compute = jnp.dtype(model.dtype)
  return jax.tree.map(lambda x, n: x if "norm" in tuple(n) else x.astype(compute),
                      params, names, is_leaf=lambda n: isinstance(n, jax.sharding.PartitionSpec))


def abstract_decoding_params(model: ModelConfig) -> Any:
  """Shapes and dtypes of the parameters as decoding reads them."""
  decoder = Decoder(model)
  return jax.eval_shape(lambda p: for_decoding(model, P.param_names(decoder), p),
                        P.abstract_params(decoder))


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]
