"""BIG-Bench Hard: exact match of the final answer, as Suzgun et al. (2022) scored Codex.

The BBH repository publishes no scoring code, only code-davinci-002's
predictions and the accuracy computed from them. Those predictions end at the
first blank line; a chain-of-thought answer is what follows the last "the
answer is" less one trailing ".", a direct answer is the whole prediction.
Exact match of that against the target reproduces every published accuracy
(tests/test_bbh.py). This module adds only what a completion that ran on needs:
it is cut where the recorded ones ended (a blank line, or the model starting
the next "Q:"), and a direct answer is its first line. One leniency: an
option written as "A", "A)" or "(A) <option text>" counts as "(A)"; none of
the recorded predictions is written so, and "(A) or (B)" still fails.
String work only.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

MODES = ("cot", "direct")
# Where a completion ends: the authors' stop at a blank line, or the next few-shot question.
STOP_STRINGS = ("\n\n", "\nQ:")
_ANSWER_IS = re.compile(r"the answer is[:\s]*(.*)", re.IGNORECASE)
# One option label, alone or before its text; labels run (A) to (R) in BBH.
_OPTION = re.compile(r"\(?([A-R])\)?|\(([A-R])\)\s+[^()]+")


def _cut(completion: str) -> str:
  text = completion.lstrip()
  ends = [text.find(s) for s in STOP_STRINGS if s in text]
  return text[:min(ends)] if ends else text


def normalize(answer: str) -> str | None:
  """An answer as compared: stripped, one trailing "." dropped, options as "(X)"."""
  answer = answer.strip()
  if answer.endswith("."):
    answer = answer[:-1].rstrip()
  option = _OPTION.fullmatch(answer)
  if option:
    answer = f"({option.group(1) or option.group(2)})"
  return answer or None


def detect_mode(completion: str) -> str:
  """"cot" if the completion states "the answer is", else "direct"."""
  return "cot" if _ANSWER_IS.search(_cut(completion)) else "direct"


def extract_answer(completion: str, mode: str | None = None) -> str | None:
  """The normalised final answer of a completion (the text after the prompt), or None.

  mode "cot": after the last "the answer is"; "direct": the first line; None:
  "cot" if the completion states "the answer is", else "direct".
  """
  text = _cut(completion)
  mode = mode or detect_mode(text)
  if mode == "cot":
    matches = _ANSWER_IS.findall(text)
    return normalize(matches[-1]) if matches else None
  if mode == "direct":
    return normalize(text.split("\n", 1)[0])
  raise ValueError(f"BBH mode must be one of {MODES}, got {mode!r}")


def gold(record: Mapping[str, Any]) -> str:
  """The record's target as compared; ValueError if it has none."""
  target = record.get("target")
  if not isinstance(target, str):
    raise ValueError("BBH record needs a string 'target'")
  answer = normalize(target)
  if answer is None:
    raise ValueError("BBH record has an empty 'target'")
  return answer


def record_mode(record: Mapping[str, Any]) -> str | None:
  """The record's "mode" ("cot" / "direct"), or None to detect it per completion."""
  mode = record.get("mode")
  if mode is not None and mode not in MODES:
    raise ValueError(f"BBH record 'mode' must be one of {MODES} (or absent), got {mode!r}")
  return mode


def score_bbh(record: Mapping[str, Any], completion: str) -> tuple[float, str]:
  """(1.0, "passed") if the completion's final answer is exactly the target."""
  target, mode = gold(record), record_mode(record)
  answer = extract_answer(completion, mode)
  if answer is None:
    return 0.0, "failed: no answer"
  if answer == target:
    return 1.0, "passed"
  return 0.0, f"failed: answer {answer[:100]!r}"
