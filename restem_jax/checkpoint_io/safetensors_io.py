"""Lazy reading and plain writing of `*.safetensors` files (single or sharded).

The format is an 8-byte little-endian header length, a JSON header naming
each tensor's dtype, shape and byte range, then the raw bytes. Reading maps
the file into memory (`np.memmap`), so a tensor costs nothing until a slice
of it is touched: a device that owns a quarter of a matrix reads a quarter
of its pages. bfloat16 is read through `ml_dtypes`, so neither torch nor
flax is needed to read or write checkpoints.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterable, Mapping

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in DTYPES.items()}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class SafetensorsError(ValueError):
  """A missing or malformed safetensors checkpoint."""


def _read_header(path: str) -> tuple[dict, int]:
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise SafetensorsError(f"{path} is not a safetensors file (shorter than 8 bytes).")
    (size,) = struct.unpack("<Q", raw)
    header = json.loads(f.read(size))
  return header, 8 + size


class SafetensorsReader:
  """All tensors of a Hugging Face directory, read lazily by name."""

  def __init__(self, directory: str):
    self.directory = directory
    index = os.path.join(directory, INDEX_NAME)
    if os.path.exists(index):
      with open(index, encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
      files = sorted(set(weight_map.values()))
    else:
      files = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))
    if not files:
      raise SafetensorsError(
          f"{directory} holds no *.safetensors file (nor {INDEX_NAME}). Save the model with "
          "`model.save_pretrained(dir, safe_serialization=True)`; PyTorch *.bin checkpoints "
          "are not read.")
    self._entries: dict[str, tuple[str, np.dtype, tuple[int, ...], int]] = {}
    for name in files:
      path = os.path.join(directory, name)
      if not os.path.exists(path):
        raise SafetensorsError(f"{INDEX_NAME} names {name}, which is missing from {directory}.")
      header, start = _read_header(path)
      for key, info in header.items():
        if key == "__metadata__":
          continue
        if info["dtype"] not in DTYPES:
          raise SafetensorsError(f"{path}: tensor {key} has unsupported dtype {info['dtype']}.")
        self._entries[key] = (path, DTYPES[info["dtype"]], tuple(info["shape"]),
                              start + info["data_offsets"][0])
    self._maps: dict[str, np.memmap] = {}

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def keys(self) -> Iterable[str]:
    return self._entries.keys()

  def shape(self, name: str) -> tuple[int, ...]:
    return self._entries[name][2]

  def get(self, name: str) -> np.ndarray:
    """A read-only memory-mapped view of the tensor (no bytes read yet)."""
    if name not in self._entries:
      raise SafetensorsError(f"tensor {name!r} is not in the checkpoint at {self.directory}.")
    path, dtype, shape, offset = self._entries[name]
    if path not in self._maps:
      self._maps[path] = np.memmap(path, dtype=np.uint8, mode="r")
    count = int(np.prod(shape, dtype=np.int64))
    flat = self._maps[path][offset:offset + count * dtype.itemsize].view(dtype)
    return flat.reshape(shape)


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
  """Writes tensors (numpy, including ml_dtypes.bfloat16) to one file."""
  header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
  offset = 0
  arrays = []
  for name, value in tensors.items():
    value = np.ascontiguousarray(value)
    if value.dtype not in _NAMES:
      raise SafetensorsError(f"cannot write {name}: dtype {value.dtype} has no safetensors name.")
    header[name] = {"dtype": _NAMES[value.dtype], "shape": list(value.shape),
                    "data_offsets": [offset, offset + value.nbytes]}
    offset += value.nbytes
    arrays.append(value)
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for value in arrays:
      f.write(value.tobytes())


def write_sharded(directory: str, tensors: Mapping[str, np.ndarray],
                  max_shard_bytes: int = 4 << 30) -> list[str]:
  """Writes `model.safetensors`, or numbered shards plus the index when large."""
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, value in tensors.items():
    if shards[-1] and size + value.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = value
    size += value.nbytes
  if len(shards) == 1:
    write_safetensors(os.path.join(directory, SINGLE_NAME), shards[0])
    return [SINGLE_NAME]
  names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  weight_map = {}
  for name, shard in zip(names, shards):
    write_safetensors(os.path.join(directory, name), shard)
    weight_map.update({key: name for key in shard})
  total = sum(v.nbytes for v in tensors.values())
  with open(os.path.join(directory, INDEX_NAME), "w", encoding="utf-8") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  return names + [INDEX_NAME]
