"""Grading by hand, for a task without an answer key (the Hungarian exam).

The greedy answers go to a CSV sheet (number, question, answer, points) that
a person fills in place; every read checks the sheet still answers the
task's questions, one row each, and totals the points filled in so far.
"""

from __future__ import annotations

import csv
import io
import math
from typing import TYPE_CHECKING, Any, Sequence

from restem_jax.checkpoint_io import files
from restem_jax.engine.sampler import SamplingConfig
from restem_jax.restem.stages import stage

if TYPE_CHECKING:
  from restem_jax.restem.evaluation import EvalConfig
  from restem_jax.tasks.base import Problem, TaskSpec

SHEET = "grading_sheet.csv"
SHEET_COLUMNS = ("number", "question", "answer", "points")


class GradingSheetError(ValueError):
  """A grading sheet that cannot be read back; the message says what to fix."""


def grade_by_hand(engine, params: Any, task: TaskSpec, problems: Sequence[Problem],
                   evaluation: EvalConfig, sheet: str) -> dict[str, Any]:
  """Writes the greedy answers to `sheet` (once), then totals the points filled in."""

  def answer() -> list[dict[str, str]]:
    # The greedy protocol of the Evaluator's test_pass@1, so the same answers a reward would score.
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=evaluation.max_new_tokens)
    completions = engine.generate(params, [p.prompt for p in problems], greedy, evaluation.seed,
                                  range(len(problems)), task.stop_strings,
                                  f"{task.name}: greedy answers")
    return [{"number": p.id, "question": _question(p), "answer": row[0].text, "points": ""}
            for p, row in zip(problems, completions)]

  rows = stage(sheet, answer, read=read_sheet, write=write_sheet)
  result = {"test_pass@1": None, "grading_sheet": sheet, **grade(rows, problems, sheet)}
  print(f"{task.name}: no reward; {result['graded']}/{len(problems)} answers graded, "
        f"points {result['points']}; grading sheet {sheet}", flush=True)
  return result


def _question(problem: Problem) -> str:
  # What a grader reads: the task's question where its record names one, else the prompt.
  return str(problem.record.get("question", problem.prompt))


def write_sheet(path: str, rows: Sequence[dict[str, str]]) -> None:
  out = io.StringIO()
  writer = csv.DictWriter(out, SHEET_COLUMNS, lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  files.write_text(path, out.getvalue())


def read_sheet(path: str) -> list[dict[str, str]]:
  """The sheet's rows (its other columns, a grader's notes, are dropped)."""
  try:
    text = files.read_text(path).removeprefix("\ufeff")  # A spreadsheet's byte-order mark.
  except UnicodeDecodeError:
    raise GradingSheetError(f"{path}: not UTF-8 text; save the sheet as UTF-8 CSV") from None
  reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
  try:
    missing = [c for c in SHEET_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
      raise GradingSheetError(f"{path}: no column(s) {missing}; the header must name "
                              f"{', '.join(SHEET_COLUMNS)} (it is {reader.fieldnames})")
    return [{c: row[c] or "" for c in SHEET_COLUMNS} for row in reader]
  except csv.Error as e:
    raise GradingSheetError(f"{path}:{reader.line_num}: not a valid CSV ({e})") from None


def grade(rows: Sequence[dict[str, str]], problems: Sequence[Problem],
          path: str) -> dict[str, Any]:
  """`graded` (rows with points) and `points` (their sum, None if none), checking that the
  sheet has one row per problem, each with its problem's question."""
  questions = {p.id: _question(p) for p in problems}
  points: dict[str, float | None] = {}
  for row in rows:
    number = row["number"].strip()
    if number not in questions:
      raise GradingSheetError(f"{path}: a row for question {number!r}, which this task does "
                              f"not have (it has {len(questions)}: {', '.join(questions)})")
    if number in points:
      raise GradingSheetError(f"{path}: two rows for question {number}")
    # Whitespace aside (a spreadsheet may change line ends), the question must be the task's.
    if row["question"].split() != questions[number].split():
      raise GradingSheetError(
          f"{path}: question {number} is not the task's question {number} (the data changed "
          "since the sheet was written, or the sheet was edited): restore it, or move the "
          "sheet away to answer the questions again")
    points[number] = _points(row["points"], number, path)
  missing = [n for n in questions if n not in points]
  if missing:
    raise GradingSheetError(f"{path}: no row for question(s) {', '.join(missing)}")
  graded = [v for v in points.values() if v is not None]
  return {"graded": len(graded), "points": math.fsum(graded) if graded else None}


def _points(text: str, number: str, path: str) -> float | None:
  """A row's points: a number >= 0, or None where the cell is empty (not graded yet)."""
  if not text.strip():
    return None
  try:
    value = float(text)
  except ValueError:
    value = math.nan
  if not math.isfinite(value) or value < 0:
    raise GradingSheetError(f"{path}: question {number}: points {text!r} is not a number >= 0 "
                            "(write e.g. 3 or 2.5, or leave the cell empty if not graded)")
  return value
