"""Durable JSON files: written whole by process 0 or not at all (resume relies on it)."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from restem_jax.engine import multihost

SHARED_CHECK = ".shared_check"


class WorkdirNotSharedError(RuntimeError):
  """Some process cannot see what process 0 writes in the workdir."""


def write_json(path: str, value: Any) -> None:
  """Writes `value` to `path` via a temporary file and a rename; process 0 only."""
  if jax.process_index() != 0:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(path + ".tmp", path)


def check_shared(directory: str) -> None:
  """Fails on every process at once unless all of them see the files process 0 writes here.

  Only process 0 writes shared files and Orbax commits checkpoints there, so a
  workdir on each host's own disk would hang the first save; this says why instead.
  """
  if not multihost.is_multiprocess():
    return
  token = int(multihost.agree(np.int32(np.random.default_rng().integers(1, 2**31 - 1))))
  path = os.path.join(directory, SHARED_CHECK)
  write_json(path, token)
  multihost.sync("shared check written")
  try:
    with open(path) as f:
      seen = json.load(f) == token
  except (OSError, ValueError):
    seen = False
  blind = [i for i, ok in enumerate(multihost.allgather(seen)) if not ok]
  multihost.sync("shared check read")
  if jax.process_index() == 0:
    os.remove(path)
  if blind:
    raise WorkdirNotSharedError(
        f"process(es) {blind} cannot see {path}, which process 0 just wrote: the workdir "
        f"{directory!r} is not shared. Every host of a multi-host run must see the same "
        "workdir: use a shared filesystem (NFS, Filestore) mounted at the same path on "
        "every host.")
