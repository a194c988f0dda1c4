"""Durable JSON files: written whole by process 0 or not at all (resume relies on it)."""

from __future__ import annotations

import json
import os
from typing import Any

import jax


def write_json(path: str, value: Any) -> None:
  """Writes `value` to `path` via a temporary file and a rename; process 0 only."""
  if jax.process_index() != 0:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(path + ".tmp", path)
