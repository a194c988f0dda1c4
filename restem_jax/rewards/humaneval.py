"""HumanEval harness: prompt + completion + test + check(entry_point) in the sandbox.

The completion runs in a process of its own; the test runs in a trusted judge
process that calls it over pipes and decides the verdict (zygote.py). Exit
codes and program output are never looked at.
"""

from __future__ import annotations

from typing import Any, Mapping

from restem_jax.rewards.sandbox import Sandbox

DEFAULT_TIMEOUT = 3.0  # seconds per program, as in the reference harness
_FIELDS = ("prompt", "test", "entry_point")


def score_humaneval(problem: Mapping[str, Any], completion: str,
                    sandbox: Sandbox,
                    timeout: float = DEFAULT_TIMEOUT) -> tuple[float, str]:
  """(1.0, "passed") only if every assertion in check() held."""
  missing = [f for f in _FIELDS if f not in problem]
  if missing:
    raise ValueError(f"HumanEval problem lacks fields {missing}")
  reply = sandbox.run("humaneval", timeout, prompt=problem["prompt"],
                      completion=completion, test=problem["test"],
                      entry_point=problem["entry_point"])
  if reply.get("error"):
    return 0.0, "failed: sandbox error"
  if reply["timed_out"]:
    return 0.0, "timed out"
  record = reply["record"]
  if record is None:
    return 0.0, "failed: no verdict (the judge ended early)"
  status = str(record.get("status"))
  return (1.0, "passed") if status == "passed" else (0.0, status)
