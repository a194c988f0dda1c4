"""Orbax checkpoints of parameters and train states, restored straight into shards.

A checkpoint directory holds `params/` (the Decoder's parameter tree, or a
TrainState's fields) written by Orbax. Writes go to a temporary sibling and
are renamed into place, so a `params/` that exists is complete: the loop
relies on that to resume after a kill.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(FileNotFoundError):
  """A checkpoint that is missing or does not fit the model."""


def exists(path: str) -> bool:
  return os.path.isdir(os.path.join(path, "params"))


def save(path: str, tree: Any) -> None:
  """Writes `tree` to `path/params` atomically (all hosts call this together).

  Other files in `path` (a converted model's model.gin and tokenizer) stay.
  """
  final = os.path.join(os.path.abspath(path), "params")
  tmp = final + ".tmp"
  if jax.process_index() == 0 and os.path.exists(tmp):
    shutil.rmtree(tmp)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp, tree)
    checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    if os.path.exists(final):
      shutil.rmtree(final)
    os.replace(tmp, final)


def restore(path: str, abstract_tree: Any, shardings: Any) -> Any:
  """Reads `path/params` into arrays placed with `shardings` (each host reads its shards)."""
  if not exists(path):
    raise CheckpointError(
        f"no checkpoint at {path!r} (expected an Orbax directory {path}/params). Point the "
        "config at an existing checkpoint, convert one with `python -m restem_jax.convert`, "
        "or let the run create its base model.")
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract_tree, shardings)
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      return checkpointer.restore(os.path.join(os.path.abspath(path), "params"), target)
  except (ValueError, KeyError) as e:
    raise CheckpointError(
        f"checkpoint at {path!r} does not match the configured model: {e}. Check that "
        "ModelConfig in gin matches the model the checkpoint was written for.") from e
