"""What a compiled program moves between devices, read from its optimised HLO.

Cost analysis counts FLOPs and memory bytes but not the interconnect; the
collectives are in the program text, each instruction once with its result
shape (what lands on a device). Asynchronous pairs (`-start`/`-done`) are
counted at their start.
"""

from __future__ import annotations

import collections
import math
import re

KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2,
          "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}
_INSTRUCTION = re.compile(
    r"=\s*(?P<shape>\(.*?\)|\w+\[[\d,]*\]\S*)\s+(?P<op>" + "|".join(KINDS) + r")(?:-start)?\(")
_ARRAY = re.compile(r"(\w+)\[([\d,]*)\]")


def collective_bytes(hlo_text: str) -> dict[str, int]:
  """Bytes each kind of collective delivers to a device, summed over the program's
  instructions (an instruction in a loop body counts once: per trip)."""
  out: collections.Counter[str] = collections.Counter()
  for match in _INSTRUCTION.finditer(hlo_text):
    arrays = _ARRAY.findall(match["shape"])
    if not arrays:
      continue
    # A -start's tuple holds its operands, then its results: the last array is the result.
    dtype, dims = arrays[-1]
    count = math.prod(int(d) for d in dims.split(",") if d)
    out[match["op"]] += count * _BYTES.get(dtype, 4)
  return dict(out)
