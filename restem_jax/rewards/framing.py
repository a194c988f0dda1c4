"""Length-prefixed pickle frames between the pool and its workers.

Both ends are trusted host code; untrusted programs never see these pipes.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any


def read_frame(fd: int) -> Any:
  header = _read_exact(fd, 4)
  if header is None:
    return None
  body = _read_exact(fd, struct.unpack(">I", header)[0])
  if body is None:
    raise EOFError("truncated frame")
  return pickle.loads(body)


def write_frame(fd: int, obj: Any) -> None:
  body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
  data = memoryview(struct.pack(">I", len(body)) + body)
  while data:
    data = data[os.write(fd, data):]


def _read_exact(fd: int, n: int) -> bytes | None:
  chunks, got = [], 0
  while got < n:
    chunk = os.read(fd, n - got)
    if not chunk:
      return None
    chunks.append(chunk)
    got += len(chunk)
  return b"".join(chunks)
