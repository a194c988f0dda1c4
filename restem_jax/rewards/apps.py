"""APPS harness: stdin/stdout and call-based (fn_name) problems.

Each test runs in a fresh sandboxed child; outputs are compared here, on the
host, so the program never sees an expected output. Reward 1 only if every
test passes; the first failure stops the run.

Output comparison follows the APPS rules for whitespace (strip lines, ignore
blank lines and runs of spaces) and numbers (integers exactly, floats with
np.allclose's tolerances, rtol 1e-5, atol 1e-8). APPS's order-insensitive "set of tokens" fallback is deliberately
left out: it accepts permuted answers, i.e. false positives.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

from restem_jax.rewards.sandbox import Sandbox

DEFAULT_TIMEOUT = 4.0  # seconds per test, as in the APPS harness
_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_FENCE = re.compile(r"```(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL)


def parse_tests(problem: Mapping[str, Any]) -> tuple[list, list, str | None]:
  """(inputs, outputs, fn_name) from an APPS record's `input_output` JSON."""
  raw = problem.get("input_output")
  if not raw:
    raise ValueError("APPS problem has no 'input_output' tests")
  try:
    spec = json.loads(raw) if isinstance(raw, str) else raw
  except json.JSONDecodeError as e:
    raise ValueError(f"APPS 'input_output' is not JSON ({e.msg})") from None
  inputs, outputs = (spec.get("inputs"), spec.get("outputs")) if isinstance(
      spec, Mapping) else (None, None)
  if not isinstance(inputs, list) or not isinstance(outputs, list) or len(
      inputs) != len(outputs) or not inputs:
    counts = (f" (has {len(inputs)} inputs and {len(outputs)} outputs)"
              if isinstance(inputs, list) and isinstance(outputs, list) else "")
    raise ValueError("APPS 'input_output' needs equal, non-empty 'inputs' and "
                     f"'outputs' lists{counts}")
  fn_name = problem.get("fn_name") or spec.get("fn_name")
  return inputs, outputs, fn_name


# The original APPS harness (testing_util.py) runs every program after these
# imports, and LeetCode-style starter code relies on them (`List[int]`); numpy,
# which it also imports, is left out (the sandbox may not have it).
APPS_HEADER = (
    "import sys, time, itertools, collections, math, fractions, random, heapq, bisect, string, re\n"
    "from itertools import accumulate, product, permutations, combinations\n"
    "from collections import Counter, OrderedDict, deque, defaultdict, ChainMap\n"
    "from functools import lru_cache\n"
    "from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2\n"
    "from typing import List, Tuple, Dict, Optional, Set\n"
    "from heapq import *\n")


def extract_code(completion: str) -> str:
  """The first ```python fenced block if the completion has one, else all."""
  match = _FENCE.search(completion)
  return match.group(1) if match else completion


def _as_text(value: Any) -> str:
  if isinstance(value, list):
    return "\n".join(str(v) for v in value)
  return str(value)


def _token_lines(text: str) -> list[list[str]]:
  return [line.split() for line in text.splitlines() if line.strip()]


def _close(a: str, b: str) -> bool:
  """Equal as numbers: integers exactly, floats within np.allclose's tolerance.

  A tolerance on integers would accept 123456790 for 123456789 (an off-by-one).
  """
  if not (_FLOAT.fullmatch(a) and _FLOAT.fullmatch(b)):
    return False
  if _INT.fullmatch(a) and _INT.fullmatch(b):
    return int(a) == int(b)
  x, y = float(a), float(b)
  return abs(x - y) <= 1e-8 + 1e-5 * abs(y)


def stdio_output_matches(got: str, expected: Any) -> bool:
  """APPS comparison of a program's stdout with the expected output."""
  got_lines, want_lines = _token_lines(got), _token_lines(_as_text(expected))
  if got_lines == want_lines:
    return True
  if [len(l) for l in got_lines] != [len(l) for l in want_lines]:
    return False
  return all(a == b or _close(a, b) for gl, wl in zip(got_lines, want_lines)
             for a, b in zip(gl, wl))


def call_output_matches(got: Any, expected: Any) -> bool:
  """APPS comparison for call-based problems (tuples already became lists)."""
  if got == expected:
    return True
  # APPS stores most call-based outputs wrapped in a one-element list.
  return isinstance(expected, list) and len(expected) == 1 and got == expected[0]


def score_apps(problem: Mapping[str, Any], completion: str, sandbox: Sandbox,
               timeout: float = DEFAULT_TIMEOUT) -> tuple[float, str]:
  inputs, outputs, fn_name = parse_tests(problem)
  code = APPS_HEADER + extract_code(completion)
  for i, (test_in, test_out) in enumerate(zip(inputs, outputs)):
    verdict = (_run_call(sandbox, code, fn_name, test_in, test_out, timeout)
               if fn_name else
               _run_stdio(sandbox, code, test_in, test_out, timeout))
    if verdict is not None:
      return 0.0, f"failed: test {i}: {verdict}"
  return 1.0, "passed"


def _run_stdio(sandbox: Sandbox, code: str, test_in: Any, test_out: Any,
               timeout: float) -> str | None:
  reply = sandbox.run("exec", timeout, code=code, stdin=_as_text(test_in))
  if reply.get("error"):
    return "sandbox error"
  if reply["timed_out"]:
    return "timed out"
  if reply["overflow"]:
    return "output too large"
  if reply["returncode"] != 0:
    return f"runtime error: {reply['stderr'].strip().splitlines()[-1:]}"
  if not stdio_output_matches(reply["stdout"], test_out):
    return "wrong answer"
  return None


def call_args(test_in: Any) -> Sequence[Any]:
  """A call-based test input as the argument list; ValueError if a line is not JSON."""
  if isinstance(test_in, str):  # some records keep one JSON value per line
    return [json.loads(line) for line in test_in.splitlines() if line.strip()]
  return test_in if isinstance(test_in, list) else [test_in]


def _run_call(sandbox: Sandbox, code: str, fn_name: str, test_in: Any,
              test_out: Any, timeout: float) -> str | None:
  reply = sandbox.run("call", timeout, code=code, fn_name=fn_name,
                      args=list(call_args(test_in)))
  if reply.get("error"):
    return "sandbox error"
  if reply["timed_out"]:
    return "timed out"
  record = reply["record"]
  if record is None or "output" not in record:
    return f"runtime error: {reply['stderr'].strip().splitlines()[-1:]}"
  if not call_output_matches(json.loads(record["output"]), test_out):
    return "wrong answer"
  return None
