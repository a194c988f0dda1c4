"""Orbax checkpoints, restored straight into shards, and the base checkpoint directory.

A checkpoint directory holds `params/` (the Decoder's parameter tree, or a
TrainState's fields) written by Orbax, and `params.sha256.json`, the digest
of every file in it, checked before every restore (a flipped byte fails
loudly instead of restoring different weights). A checkpoint that `exists` is
complete, which the loop relies on to resume after a kill: on a local disk
it is written to a temporary sibling and renamed into place; in a gs://
bucket, where a rename is a copy, Orbax's own commit marker (written last)
says it is complete.

The base checkpoint that `convert` writes adds files beside `params/`:

    ORBAX_DIR/
      params/            Orbax (StandardCheckpointer) save of the Decoder's params
                         pytree: nested dicts exactly as `Decoder.init` makes them.
      model.gin          `ModelConfig.*` bindings (gin syntax, one per line).
      hf_config.json     the source config.json (used by export and --verify).
      tokenizer.json / tokenizer.model / tokenizer_config.json / ...
                         the tokenizer files, copied (or built from a GGUF vocab).
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from restem_jax.checkpoint_io import files
from restem_jax.engine import multihost
from restem_jax.engine.config import ModelConfig

PARAMS_SUBDIR = "params"
DIGESTS = "params.sha256.json"  # SHA-256 of every file under params/, written at save.
# Bytes a save holds in flight (Orbax's default is 96 GB, i.e. the whole tree):
# saving a 1.4 GB state otherwise held 1.4-2.4 GB more at its peak, most of it
# kept by glibc after the save, on top of the next train step
# (benchmarks/README.md, Memory). 0.25 GB made no save slower.
_SAVE_CONCURRENT_GB = 0.25
MODEL_GIN = "model.gin"
HF_CONFIG = "hf_config.json"


class CheckpointError(FileNotFoundError):
  """A checkpoint that is missing or does not fit the model."""


def exists(path: str) -> bool:
  """Whether a complete checkpoint is at `path` (process 0 decides for every process)."""
  return bool(multihost.agree(_complete(os.path.join(files.resolve(path), PARAMS_SUBDIR))))


def _complete(params: str) -> bool:
  if not files.exists(params):
    return False
  return not files.is_remote(params) or ocp.step.is_path_finalized(params)


def save(path: str, tree: Any) -> None:
  """Writes `tree` to `path/params` atomically (all hosts call this together).

  Other files in `path` (a converted model's model.gin and tokenizer) stay.
  """
  final = os.path.join(files.resolve(path), PARAMS_SUBDIR)
  # In a bucket Orbax commits in place (marker last); on disk we rename a finished copy.
  tmp = final if files.is_remote(final) else final + ".tmp"
  files.remove_tree(tmp)
  files.remove_file(os.path.join(files.resolve(path), DIGESTS))  # Never beside other params.
  multihost.sync("checkpoint cleared")
  with ocp.StandardCheckpointer(save_concurrent_gb=_SAVE_CONCURRENT_GB) as checkpointer:
    checkpointer.save(tmp, tree)
    checkpointer.wait_until_finished()
  multihost.sync("checkpoint saved")
  if jax.process_index() == 0:
    # On disk the digests go first: a crash before the rename leaves no
    # checkpoint, never one with stale digests.
    digests = files.digests(tmp)
    if tmp != final:
      files.remove_tree(final)
    files.write_json(os.path.join(files.resolve(path), DIGESTS), digests)
    if tmp != final:
      os.replace(tmp, final)
  # Nobody reads or tests for the checkpoint before process 0 has renamed it.
  multihost.sync("checkpoint committed")


def verify(path: str) -> None:
  """Fails unless every file of `path/params` matches the digest written at save."""
  problem = ""
  if jax.process_index() == 0:
    record = os.path.join(files.resolve(path), DIGESTS)
    if files.exists(record):
      expected = files.read_json(record)
      actual = files.digests(os.path.join(files.resolve(path), PARAMS_SUBDIR))
      bad = sorted(name for name in set(expected) | set(actual)
                   if expected.get(name) != actual.get(name))
      if bad:
        problem = (f"checkpoint {path!r} is damaged: {', '.join(bad[:5])}"
                   f"{' ...' if len(bad) > 5 else ''} differ from the digests written at save "
                   f"({DIGESTS}). Restore it from a copy; a checkpoint the run wrote (an "
                   "iteration's or an M-step's) is made again if you delete it.")
    else:
      logging.warning("%s has no %s (written by an older version or another tool): restoring "
                      "it unverified.", path, DIGESTS)
  if not multihost.agree(np.int32(not problem)):
    raise CheckpointError(problem or f"checkpoint {path!r} failed verification on process 0.")


def restore(path: str, abstract_tree: Any, shardings: Any) -> Any:
  """Reads `path/params` into arrays placed with `shardings` (each host reads its shards)."""
  if not exists(path):
    raise CheckpointError(
        f"no checkpoint at {path!r} (expected an Orbax directory {path}/params). Point the "
        "config at an existing checkpoint, convert one with `python -m restem_jax.convert`, "
        "or let the run create its base model.")
  verify(path)
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract_tree, shardings)
  directory = os.path.join(files.resolve(path), PARAMS_SUBDIR)
  with ocp.StandardCheckpointer() as checkpointer:
    # Checked from the metadata first: a failing Orbax restore floods stderr
    # with its worker threads' tracebacks before the error arrives.
    _check_shapes(path, checkpointer.metadata(directory).item_metadata, target)
    return checkpointer.restore(directory, target)


def _check_shapes(path: str, stored: Any, target: Any) -> None:
  have, want = _shapes(stored), _shapes(target)
  bad = [f"{k}: stored {have.get(k, 'missing')}, model {want.get(k, 'absent')}"
         for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)]
  if bad:
    raise CheckpointError(
        f"checkpoint at {path!r} does not match the configured model ({len(bad)} "
        f"parameters differ, e.g. {bad[0]}). Check that ModelConfig in gin matches the model "
        "the checkpoint was written for.")


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """Leaf shapes by path, spelled alike for live trees and Orbax's metadata (which
  stores a NamedTuple's fields and a sequence's items as dict keys)."""
  def name(key):
    return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
  return {"/".join(name(k) for k in keys): tuple(leaf.shape)
          for keys, leaf in jax.tree_util.tree_leaves_with_path(tree)}


# How a model is run, not what it is: left to the run's own gin files.
EXECUTION_FIELDS = ("remat", "scan_unroll")


def model_gin_text(cfg: ModelConfig, header: str = "") -> str:
  lines = [f"# {line}" for line in header.splitlines()]
  for field in dataclasses.fields(ModelConfig):
    if field.name in EXECUTION_FIELDS:
      continue
    lines.append(f"ModelConfig.{field.name} = {getattr(cfg, field.name)!r}")
  return "\n".join(lines) + "\n"


def write_model_gin(path: str, cfg: ModelConfig, header: str = "") -> None:
  files.write_text(path, model_gin_text(cfg, header))


def read_model_gin(path: str, **overrides: Any) -> ModelConfig:
  """ModelConfig from a model.gin of `ModelConfig.name = literal` lines.

  Parsed without gin's global registry, so reading a checkpoint never
  disturbs the caller's gin configuration.
  """
  values: dict[str, Any] = {}
  names = {f.name for f in dataclasses.fields(ModelConfig)}
  for number, line in enumerate(files.read_text(path).splitlines(), 1):
    line = line.split("#", 1)[0].strip()
    if not line:
      continue
    target, _, literal = line.partition("=")
    target = target.strip()
    name = target.rsplit(".", 1)[-1]
    if not target.endswith("ModelConfig." + name) or name not in names:
      raise ValueError(f"{path}:{number}: expected `ModelConfig.<field> = <value>`, got {line!r}.")
    values[name] = ast.literal_eval(literal.strip())
  values.update(overrides)
  return ModelConfig(**values)


def is_converted(path: str) -> bool:
  """Whether `path` is a base checkpoint directory that `convert` wrote (local or gs://)."""
  return files.exists(os.path.join(path, MODEL_GIN)) and _complete(
      os.path.join(files.resolve(path), PARAMS_SUBDIR))
