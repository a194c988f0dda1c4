"""Multi-controller JAX: every process runs the same program, so decisions must agree.

On a pod slice each host runs the loop; arrays span every host's devices.
Host data becomes a global array only through `global_array`, outputs the
host reads are replicated, decisions that read files or run rewards are made
on process 0 and broadcast (`agree`), and `sync` is a barrier. In one process
all of these are plain local operations.

A collective or barrier may raise because another process died (a preempted
host); `lost_peer` recognises that error, so the CLI reports the loss in one
line instead of a traceback.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

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


# Lower-case fragments of the errors a collective or barrier raises when a peer
# process is gone: gloo's socket errors on CPU/GPU hosts, gRPC statuses from the
# coordination service (its barriers, and the key-value store gloo connects by).
_LOST_PEER_SIGNS = ("connection reset by peer", "broken pipe", "connection refused",
                    "connection closed", "socket closed", "gloo", "unavailable:",
                    "deadline_exceeded", "heartbeat")


class LostPeer(NamedTuple):
  who: str  # "process I of 2" where the job has two processes, else "a peer process".
  reason: str  # The first line of the error that showed it.


def lost_peer(error: BaseException) -> LostPeer | None:
  """If `error` means another process of the job is gone, which one and how it showed; else None.

  With more than two processes the lost one is not named: the process whose
  socket failed may be a survivor that has already exited.
  """
  if not is_multiprocess():
    return None
  for e in _causes(error):
    text = str(e)
    if isinstance(e, jax.errors.JaxRuntimeError) and any(
        sign in text.lower() for sign in _LOST_PEER_SIGNS):
      two = jax.process_count() == 2
      who = f"process {1 - jax.process_index()} of 2" if two else "a peer process"
      line = (text.strip().splitlines() or [type(e).__name__])[0]
      return LostPeer(who, line if len(line) <= 200 else line[:200] + "...")
  return None


def _causes(error: BaseException) -> Iterator[BaseException]:
  """`error` and what it was raised from or during (Orbax re-raises its threads' errors)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__
