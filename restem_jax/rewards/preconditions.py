"""What a record needs for its task's reward to score it, checked before any sampling.

The rewards raise on records they cannot score (no gold answer, tests that do
not parse), which the batch pool reports as a RewardInputError in the middle
of a run. `check_record` runs the rewards' own parsing on a record up front,
so a dataset reader can reject it with its file and line instead. String work
only: no sandbox, no sympy, no jax.
"""

from __future__ import annotations

import ast
import keyword
from typing import Any, Mapping

from restem_jax.rewards import apps, bbh, math_answers
from restem_jax.rewards.scoring import check_task

_SHOWN = 60  # Characters of an offending value quoted in a reason.


def check_record(task: str, record: Mapping[str, Any]) -> None:
  """Raises ValueError with a short reason if `task`'s reward could not score `record`."""
  check_task(task)
  if not isinstance(record, Mapping):
    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
  _CHECKS[task](record)


def _short(text: str) -> str:
  return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def _check_math(record: Mapping[str, Any]) -> None:
  if not isinstance(record.get("solution", ""), str):
    raise ValueError("'solution' must be a string")
  try:
    gold = math_answers.math_gold(record)
  except ValueError:
    raise ValueError("solution has no \\boxed{...} answer (and the record no 'answer' "
                     f"field): {_short(record.get('solution', ''))}") from None
  if not gold.strip():
    raise ValueError("the gold answer (the solution's last \\boxed{...}) is empty")


def _check_gsm8k(record: Mapping[str, Any]) -> None:
  answer = record.get("answer", "")
  if not isinstance(answer, str):
    raise ValueError("'answer' must be a string")
  try:
    math_answers.gsm8k_gold(record)
  except ValueError:
    marked = math_answers.gsm8k_marked_answer(answer)
    found = f"'#### {marked}'" if marked is not None else "no '####' line"
    raise ValueError(f"answer has no '#### <number>' line ({found})") from None


def _check_apps(record: Mapping[str, Any]) -> None:
  inputs, _, fn_name = apps.parse_tests(record)
  if fn_name is None:
    return
  for i, test_in in enumerate(inputs):
    try:
      apps.call_args(test_in)
    except ValueError as e:
      raise ValueError(f"call-based test {i}: input is not one JSON value per line "
                       f"({getattr(e, 'msg', e)}): {_short(test_in)}") from None


def _check_humaneval(record: Mapping[str, Any]) -> None:
  fields = ("prompt", "test", "entry_point")
  bad = [f for f in fields if not isinstance(record.get(f), str)]
  if bad:
    raise ValueError(f"field(s) {bad} missing or not strings")
  entry_point = record["entry_point"]
  if not entry_point.isidentifier() or keyword.iskeyword(entry_point):
    raise ValueError(f"entry_point {entry_point!r} is not a Python name")
  try:
    tree = ast.parse(record["test"])
    compile(tree, "<test>", "exec")  # Catches what parses but cannot run ('return' at top).
  except SyntaxError as e:
    raise ValueError(f"test does not compile (line {e.lineno}: {e.msg})") from None
  except ValueError as e:  # NUL bytes.
    raise ValueError(f"test does not compile ({e})") from None
  if not any(isinstance(node, ast.FunctionDef) and node.name == "check" for node in tree.body):
    raise ValueError("test defines no check(candidate) function")


def _check_bbh(record: Mapping[str, Any]) -> None:
  bbh.gold(record)
  bbh.record_mode(record)
  bad = [f for f in ("input", "subtask") if not isinstance(record.get(f, ""), str)]
  if bad:
    raise ValueError(f"field(s) {bad} must be strings")


_CHECKS = {"math": _check_math, "gsm8k": _check_gsm8k, "apps": _check_apps,
           "humaneval": _check_humaneval, "bbh": _check_bbh}
