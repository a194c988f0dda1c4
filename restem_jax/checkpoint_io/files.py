"""Durable files on a local disk or in a gs:// bucket, written whole by process 0 or not at all.

Every file the loop reads or writes goes through here (and Orbax, for
checkpoints), so a workdir may be a local directory, a shared filesystem or
`gs://bucket/run`. Local files are written to a temporary name and renamed;
a GCS object upload is already all-or-nothing, so objects are written in place.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import IO, Any

# gs:// through fsspec's gcsfs (what the tests exercise against a GCS server);
# tf.io.gfile would otherwise be picked whenever TensorFlow is installed.
os.environ.setdefault("EPATH_USE_TF", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from etils import epath  # noqa: E402

from restem_jax.engine import multihost  # noqa: E402

SHARED_CHECK = ".shared_check"


class WorkdirNotSharedError(RuntimeError):
  """Some process cannot see what process 0 writes in the workdir."""


class DamagedFileError(ValueError):
  """A file that is there but fails its check: truncated, altered, or not what was written."""


def is_remote(path: str) -> bool:
  """Whether `path` names an object store (gs://...) rather than a local path."""
  return "://" in str(path)


def resolve(path: str) -> str:
  """An absolute local path, or the URL unchanged."""
  return str(path) if is_remote(path) else os.path.abspath(path)


def _path(path: str) -> epath.Path:
  if is_remote(path) and str(path).startswith("gs://"):
    try:
      import gcsfs  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError as e:
      raise ImportError(f"{path}: gs:// paths need gcsfs: pip install 'restem_jax[gcs]' "
                        "(the tpu extra includes it).") from e
  return epath.Path(path)


def exists(path: str) -> bool:
  return _path(path).exists()


def makedirs(path: str) -> None:
  _path(path).mkdir(parents=True, exist_ok=True)


def listdir(path: str) -> list[str]:
  return [p.name for p in _path(path).iterdir()]


def read_text(path: str) -> str:
  return _path(path).read_text()


def read_json(path: str) -> Any:
  """The JSON value in `path`; DamagedFileError (with the line) if it does not parse."""
  try:
    return json.loads(read_text(path))
  except json.JSONDecodeError as e:
    raise DamagedFileError(f"{path}: line {e.lineno}: not valid JSON ({e.msg}): the file is "
                           "damaged (cut short by a crash, or edited)") from e


def open_for_writing(path: str, mode: str = "wb") -> IO:
  """A file object on `path` (for writers that want one, e.g. matplotlib)."""
  return _path(path).open(mode)


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` whole (process 0 only)."""
  if jax.process_index() != 0:
    return
  if is_remote(path):
    _path(path).write_text(text)
    return
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # Data on disk before the rename, and the rename on disk before we go on:
  # a power loss leaves the old file or the new one, never an empty one.
  with open(path + ".tmp", "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(path + ".tmp", path)
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def create_exclusive(path: str, text: str) -> bool:
  """Creates `path` with `text` unless it exists; False if it did.

  On disk O_EXCL; in a bucket gcsfs's create mode, an upload with
  ifGenerationMatch=0 that GCS refuses (412) when the object exists.
  """
  if not is_remote(path):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(text)
    return True
  _path(path)  # the clear error when gcsfs is missing
  import fsspec  # pylint: disable=import-outside-toplevel
  try:
    with fsspec.open(str(path), "xb") as f:
      f.write(text.encode())
  except FileExistsError:
    return False
  return True


def write_json(path: str, value: Any) -> None:
  """Writes `value` as JSON, whole (process 0 only)."""
  write_text(path, json.dumps(value, indent=1, sort_keys=True))


def digests(directory: str) -> dict[str, str]:
  """SHA-256 of every file under `directory`, by path relative to it."""
  root, out, todo = _path(directory), {}, [_path(directory)]
  while todo:
    for path in sorted(todo.pop().iterdir()):
      if path.is_dir():
        todo.append(path)
        continue
      digest = hashlib.sha256()
      with path.open("rb") as f:
        while chunk := f.read(1 << 24):
          digest.update(chunk)
      out[str(path.relative_to(root))] = digest.hexdigest()
  return dict(sorted(out.items()))


def remove_file(path: str) -> None:
  """Deletes one file, if there (process 0 only)."""
  if jax.process_index() == 0 and exists(path):
    _path(path).unlink()


def remove_tree(path: str) -> None:
  """Deletes a directory (or prefix) and everything below it, if there (process 0 only)."""
  if jax.process_index() == 0 and exists(path):
    _path(path).rmtree()


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
    seen = read_json(path) == token
  except (OSError, ValueError):
    seen = False
  blind = [i for i, ok in enumerate(multihost.allgather(seen)) if not ok]
  multihost.sync("shared check read")
  remove_file(path)
  if blind:
    raise WorkdirNotSharedError(
        f"process(es) {blind} cannot see {path}, which process 0 just wrote: the workdir "
        f"{directory!r} is not shared. Every host of a multi-host run must see the same "
        "workdir: a gs:// bucket, or a shared filesystem (NFS, Filestore) mounted at the "
        "same path on every host.")
