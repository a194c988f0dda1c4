"""Multi-controller JAX: every process runs the same program, so decisions must agree.

On a pod slice each host runs the loop; arrays span every host's devices.
Host data becomes a global array only through `global_array`, outputs the
host reads are replicated, decisions that read files or run rewards are made
on process 0 and broadcast (`agree`), and `sync` is a barrier. In one process
all of these are plain local operations.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Sharding


def is_multiprocess() -> bool:
  return jax.process_count() > 1


def global_array(host: Any, sharding: Sharding) -> jax.Array:
  """A global array from host data that every process holds whole (each puts its shards)."""
  host = np.asarray(host)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def agree(value: Any) -> Any:
  """Process 0's value (a bool, number or numpy array), on every process."""
  if not is_multiprocess():
    return value
  out = multihost_utils.broadcast_one_to_all(np.asarray(value))
  return out.item() if np.ndim(out) == 0 else np.asarray(out)


def allgather(value: Any) -> np.ndarray:
  """Every process's own `value`, stacked in process order, on every process."""
  if not is_multiprocess():
    return np.asarray(value)[None]
  return np.asarray(multihost_utils.process_allgather(np.asarray(value)))


def sync(name: str) -> None:
  """A barrier: no process goes on until all have reached it."""
  if is_multiprocess():
    multihost_utils.sync_global_devices(name)
