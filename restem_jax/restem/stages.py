"""Durable stages: a finished stage leaves a file, and a rerun reads it instead of recomputing.

Every stage of the loop (the kept set, an M-step's checkpoint, an
evaluation) goes through `stage`, so resuming after a kill is one rule: what
exists is finished, because every writer writes atomically and syncs to disk;
a file that exists but fails its reader's check is computed again, never trusted.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

from restem_jax.checkpoint_io import files
from restem_jax.engine import multihost

T = TypeVar("T")


def stage(path: str, compute: Callable[[], T], *, read: Callable[[str], T] = files.read_json,
          write: Callable[[str, T], None] = files.write_json,
          exists: Callable[[str], bool] = files.exists) -> T:
  """The value a finished stage left at `path`, else `compute()`, written there first.

  On several processes, process 0 decides whether the stage is finished and
  alone writes; all wait until the file is there.
  """
  if multihost.agree(exists(path)):
    try:
      value, damage = read(path), ""
    except files.DamagedFileError as e:
      value, damage = None, str(e)
    if multihost.agree(not damage):
      return value
    logging.warning("%s; computing it again.", damage or f"{path} is damaged on another process")
  value = compute()
  write(path, value)
  multihost.sync("stage written")
  return value
