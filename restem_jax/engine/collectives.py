"""What a compiled program moves between devices, read from its optimised HLO.

Cost analysis counts FLOPs and memory bytes but not the interconnect; the
collectives are in the program text, each instruction once with its result
shape (what lands on a device); XLA combines several into one instruction
whose result is a tuple. Asynchronous pairs (`-start`/`-done`) are counted at
their start.
"""

from __future__ import annotations

import collections
import math
import re

KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2,
          "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}
_INSTRUCTION = re.compile(
    r"=\s*(?P<shape>\(.*?\)|\w+\[[\d,]*\]\S*)\s+(?P<op>" + "|".join(KINDS)
    + r")(?P<start>-start)?\(")
_ARRAY = re.compile(r"(\w+)\[([\d,]*)\]")


def collective_bytes(hlo_text: str) -> dict[str, int]:
  """Bytes each kind of collective delivers to a device, summed over the program's
  instructions (an instruction in a loop body counts once: per trip)."""
  out: collections.Counter[str] = collections.Counter()
  for match in _INSTRUCTION.finditer(hlo_text):
    arrays = [(dtype, math.prod(int(d) for d in dims.split(",") if d))
              for dtype, dims in _ARRAY.findall(match["shape"])]
    if match["start"] and match["op"] != "all-reduce":
      # (operands, results, contexts): the non-scalar arrays' second half are the results.
      arrays = [a for a in arrays if a[1] > 1]
      arrays = arrays[len(arrays) // 2:]
    # A combined collective's tuple holds one result per operand.
    out[match["op"]] += sum(n * _BYTES.get(dtype, 4) for dtype, n in arrays)
  return dict(out)
