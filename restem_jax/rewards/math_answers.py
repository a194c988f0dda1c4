"""Final-answer extraction and equivalence for MATH and GSM8K.

Protocol (PaLM 2 / Minerva, as the ReST^EM paper uses it): take the answer
after "Final Answer: The final answer is", normalise it with the Minerva
normalisation, compare strings, then check symbolic equivalence. The symbolic
step is math-verify (sympy based) rather than hand-written parsing; see
benchmarks/README.md (Rewards) for the measured agreement of each step.

The functions that call sympy can hang on adversarial input. math_guard.py
refuses answers whose evaluation explodes before sympy sees them, each
math-verify step runs under its own alarm (STEP_TIMEOUT_S), and the batch pool
(batch.py) runs checks in worker processes it kills at a deadline, for what
neither catches.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Mapping

from restem_jax.rewards import bbh

if TYPE_CHECKING:
  from restem_jax.rewards import math_guard

_FINAL, _IS, _HOPE = "Final Answer:", "The final answer is", "I hope it is correct"
# Longer "answers" are rambling, not answers: normalising them costs O(n^2), a
# symbolic check can only time out, and they would flood logs and results.
MAX_ANSWER_CHARS = 1000
# Limit of one math-verify step (a parse, a comparison). Its alarm counts whole
# seconds, so 1 is the shortest; it is far above what normal answers take
# (bench_rewards.py --bombs), so only answers that pass the guard and still
# choke sympy reach it.
STEP_TIMEOUT_S = 1
# The longest a check runs while each step keeps to its limit: two parses (each
# with the guard's examination) and a comparison, twice with the percent retry.
CHECK_LIMIT_S = 2 * 3 * STEP_TIMEOUT_S
_MINERVA_OPEN = re.compile(r"The final answer is\s*(.+)")
_THE_ANSWER_IS = re.compile(r"[Tt]he answer is[:\s]*(.+)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")

# Minerva normalisation (Lewkowycz et al. 2022, appendix D.1).
_SUBSTITUTIONS = (("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""),
                  ("\\ ", ""), (" ", ""), ("mbox", "text"),
                  (",\\text{and}", ","), ("\\text{and}", ","),
                  ("\\text{m}", "\\text{}"))
_REMOVED = ("square", "ways", "integers", "dollars", "mph", "inches", "ft",
            "hours", "km", "units", "\\ldots", "sue", "points", "feet",
            "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds",
            "meters", "meals", "edges", "students", "childrentickets",
            "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}",
            "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}",
            "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", '"',
            "\\dots")


def last_boxed(text: str) -> str | None:
  """Contents of the last \\boxed{...} or \\fbox{...}, nested braces allowed."""
  start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
  if start < 0:
    return None
  i = start + (6 if text.startswith("\\boxed", start) else 5)
  if text.startswith(" ", i) and not text.startswith(" {", i):
    # "\boxed 5": the argument runs to the next "$" or whitespace.
    return re.split(r"[\s$]", text[i + 1:], maxsplit=1)[0] or None
  while i < len(text) and text[i].isspace():
    i += 1
  if i >= len(text) or text[i] != "{":
    return None
  depth = 0
  for j in range(i, len(text)):
    if text[j] == "{":
      depth += 1
    elif text[j] == "}":
      depth -= 1
      if depth == 0:
        return text[i + 1:j]
  return None


def minerva_answer(text: str) -> str | None:
  """X from the last "Final Answer: The final answer is X. I hope it is correct."."""
  # String search, not a regex: `\s*(.*?)\s*\.?\s*I hope` backtracks
  # cubically on long runs of spaces (8 KB took minutes).
  end = text.rfind(_HOPE)
  start = text.rfind(_FINAL, 0, end) if end >= 0 else -1
  while start >= 0:
    rest = text[start + len(_FINAL):end].lstrip()
    if rest.startswith(_IS):
      answer = rest[len(_IS):].strip()
      return answer[:-1].strip() if answer.endswith(".") else answer
    start = text.rfind(_FINAL, 0, start)
  # Truncated samples often lose the closing sentence; keep the line.
  matches = _MINERVA_OPEN.findall(text)
  return matches[-1].strip().rstrip(".").strip() if matches else None


def gsm8k_marked_answer(text: str) -> str | None:
  """N from GSM8K's "#### N" (the last marker wins)."""
  if "####" not in text:
    return None
  tail = text.rsplit("####", 1)[1].strip()
  return tail.splitlines()[0].strip() if tail else None


def normalize_final_answer(answer: str) -> str:
  """Minerva's string normalisation of a final answer."""
  answer = answer.split("=")[-1]
  for before, after in _SUBSTITUTIONS:
    answer = answer.replace(before, after)
  for expr in _REMOVED:
    answer = answer.replace(expr, "")
  answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
  answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", answer)
  answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", answer)
  answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", answer)
  answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
  answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
  answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", answer)
  answer = answer.replace("$", "")
  if answer.replace(",", "").isdigit():
    answer = answer.replace(",", "")
  return answer


def canonical_number(text: str) -> str | None:
  """"$1,234.50" -> "1234.5"; None if the text has no single number in it."""
  cleaned = re.sub(r"\\text\{[^}]*\}|\\!|\\,|\\\$|[$%]", "", text)
  numbers = _NUMBER.findall(cleaned)
  if not numbers:
    return None
  try:
    value = Decimal(numbers[-1].replace(",", ""))
  except InvalidOperation:
    return None
  value = value.normalize()
  return format(value, "f") if value != 0 else "0"


# ---- MATH ------------------------------------------------------------------


def math_gold(problem: Mapping[str, Any]) -> str:
  """Gold answer of a MATH record: the last \\boxed{} of its solution."""
  gold = last_boxed(problem.get("solution", "") or "")
  if gold is None:
    gold = problem.get("answer")
  if gold is None:
    raise ValueError("MATH problem has no \\boxed{} answer in 'solution' and "
                     "no 'answer' field")
  return str(gold)


def math_prediction(completion: str) -> str | None:
  """The model's final answer: Minerva format first, else the last \\boxed{}."""
  answer = minerva_answer(completion)
  if answer is not None:
    boxed = last_boxed(answer)
    return boxed if boxed is not None else answer
  return last_boxed(completion)


def _strip_dollars(answer: str) -> str:
  return answer.strip().strip("$").strip()


class _OwnParseLimit(logging.Filter):
  """Drops math-verify's notice that its parse limit is off: _parse sets one."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Timeout is disabled")


logging.getLogger("math_verify.parser").addFilter(_OwnParseLimit())


def symbolic_equiv(gold: str, pred: str, timeout: int = STEP_TIMEOUT_S) -> bool:
  """math-verify (sympy) equivalence of two LaTeX answers.

  Structurally equal canonical forms (math_guard.py) are equivalent without
  evaluating either; an answer the guard refuses is equivalent to nothing else.
  """
  import math_verify  # heavy (sympy); imported in the worker that needs it
  g, g_examined = _parse(gold, timeout)
  p, p_examined = _parse(pred, timeout)
  if (g_examined and p_examined and g_examined.canonical is not None and
      g_examined.canonical == p_examined.canonical):
    return True
  refused = any(e is not None and e.refusal for e in (g_examined, p_examined))
  if refused or not g or not p:
    return False
  return bool(math_verify.verify(g, p, timeout_seconds=timeout))


def _parse(answer: str, timeout: int
           ) -> tuple[list, math_guard.Examined | None]:
  """math-verify's parse of an answer and math_guard's examination of it,
  under one math-verify time limit: a step of the check."""
  from math_verify.errors import TimeoutException
  from math_verify.utils import timeout as time_limit
  try:
    return time_limit(timeout)(_parse_unlimited)(
        f"${_strip_dollars(answer)}$")
  except TimeoutException:  # in the guard (math-verify's parse returns [])
    return [], None


def _parse_unlimited(latex: str) -> tuple[list, math_guard.Examined | None]:
  import math_verify
  import sympy
  from restem_jax.rewards import math_guard
  early = math_guard.examine_latex(latex)
  if early is not None and early.refusal:
    return [], early
  # The limit is _parse's, around this parse and the guard's together.
  parsed = math_verify.parse(latex, parsing_timeout=None)
  tree = next((x for x in parsed
               if isinstance(x, (sympy.Basic, sympy.MatrixBase))), None)
  return parsed, (math_guard.examine(tree) if tree is not None else None)


def math_equiv(gold: str, pred: str | None) -> bool:
  """Minerva-normalised string match, else symbolic equivalence."""
  if pred is None or not pred.strip():
    return False
  if normalize_final_answer(gold) == normalize_final_answer(pred):
    return True
  if symbolic_equiv(gold, pred):
    return True
  # "12.5\%" vs "12.5": math-verify reads one side as 0.125.
  g, p = _strip_percent(gold), _strip_percent(pred)
  return (g, p) != (gold, pred) and symbolic_equiv(g, p)


def _strip_percent(answer: str) -> str:
  return re.sub(r"\\?%\s*$", "", answer.strip().strip("$").strip()).strip()


def score_math(problem: Mapping[str, Any], completion: str) -> tuple[float, str]:
  pred = math_prediction(completion)
  if pred is None:
    return 0.0, "failed: no final answer"
  if len(pred) > MAX_ANSWER_CHARS:
    return 0.0, f"failed: an answer of {len(pred)} characters"
  if math_equiv(math_gold(problem), pred):
    return 1.0, "passed"
  return 0.0, f"failed: answer {pred!r}"


# ---- GSM8K -----------------------------------------------------------------


def gsm8k_gold(problem: Mapping[str, Any]) -> str:
  """Gold answer of a GSM8K record: the number after "####" in 'answer'."""
  marked = gsm8k_marked_answer(problem.get("answer", "") or "")
  gold = canonical_number(marked) if marked is not None else None
  if gold is None:
    raise ValueError("GSM8K problem has no '#### N' in its 'answer' field")
  return gold


def gsm8k_prediction(completion: str) -> str | None:
  """Canonical number from "#### N", the Minerva line, \\boxed{}, "The answer
  is N", else the last number in the completion (the usual GSM8K fallback)."""
  for extract in (gsm8k_marked_answer, minerva_answer, last_boxed,
                  _the_answer_is):
    answer = extract(completion)
    number = canonical_number(answer) if answer is not None else None
    if number is not None:
      return number
  return canonical_number(completion)


def _the_answer_is(text: str) -> str | None:
  matches = _THE_ANSWER_IS.findall(text)
  return matches[-1] if matches else None


def score_gsm8k(problem: Mapping[str, Any], completion: str) -> tuple[float, str]:
  pred = gsm8k_prediction(completion)
  if pred is None:
    return 0.0, "failed: no number"
  if Decimal(pred) == Decimal(gsm8k_gold(problem)):
    return 1.0, "passed"
  return 0.0, f"failed: answer {pred}"


def extract_answer(task: str, completion: str) -> str | None:
  """Normalised, hashable final answer for majority voting (maj@k).

  String-level only (no sympy), so it is safe to call in the loop's process:
  answers are grouped by their Minerva-normalised form (MATH), canonical
  number (GSM8K) or the answer BBH's exact match compares (rewards/bbh.py).
  """
  if task == "math":
    pred = math_prediction(completion)
    if pred is None or len(pred) > MAX_ANSWER_CHARS:  # Not an answer one could vote on.
      return None
    return normalize_final_answer(pred) or None
  if task == "gsm8k":
    return gsm8k_prediction(completion)
  if task == "bbh":  # Without a record the mode is read off the completion.
    return bbh.extract_answer(completion)
  raise ValueError(f"extract_answer supports 'math', 'gsm8k' and 'bbh', not {task!r}")
