"""The Hungarian exam: test.csv read as published, the project's prompt, and hand grading
through transfer's grading sheet (written with a tiny random model, filled, read back)."""

import csv
import json
import os
import tempfile

import seqio
from absl.testing import absltest

import restem_jax.tasks  # noqa: F401  (registers the tasks)
from restem_jax import transfer
from restem_jax.engine import partitioning
from restem_jax.engine.config import ModelConfig
from restem_jax.engine.engine import Engine
from restem_jax.engine.sampler import SamplingConfig
from restem_jax.restem import grading_sheet
from restem_jax.restem.evaluation import EvalConfig
from restem_jax.rewards import math_answers
from restem_jax.tasks import base, benchmarks, hungarian_exam, prompts_math, readers

# test.csv as published: one `Question` column, quoted where a field holds a comma, a quote
# or a newline (quotes doubled), LaTeX backslashes as they are.
CSV = ('Question\n'
       '"Given are two sets: $A=\\{a ; 3 a ; 1\\}$ and $B=\\{a^{2} ; a+4 ; 1 ; a+1\\}$. '
       'Determine $a$, if $A \\cap B = A$."\n'
       'Solve the equation $\\frac{1}{x} + x \\neq 2$ over the real numbers.\n'
       '"A rectangle is called ""golden"" if its sides are in the ratio $\\frac{1+\\sqrt{5}}{2}$.\n'
       'a) Show that cutting a square off a golden rectangle leaves a golden rectangle.\n'
       'b) What is the ratio, rounded to 3 decimals?"\n')
QUESTIONS = [
    "Given are two sets: $A=\\{a ; 3 a ; 1\\}$ and $B=\\{a^{2} ; a+4 ; 1 ; a+1\\}$. "
    "Determine $a$, if $A \\cap B = A$.",
    "Solve the equation $\\frac{1}{x} + x \\neq 2$ over the real numbers.",
    "A rectangle is called \"golden\" if its sides are in the ratio $\\frac{1+\\sqrt{5}}{2}$.\n"
    "a) Show that cutting a square off a golden rectangle leaves a golden rectangle.\n"
    "b) What is the ratio, rounded to 3 decimals?",
]
MODEL = ModelConfig(vocab_size=264, embed_dim=32, num_layers=1, num_heads=2, num_kv_heads=1,
                    head_dim=16, mlp_dim=64)
EVAL = EvalConfig(pass_k_samples=2, pass_ks=(1, 2), maj_ks=(2,), max_new_tokens=16)


def _write_csv(data_dir, text, encoding="utf-8"):
  path = hungarian_exam.csv_path(data_dir)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding=encoding, newline="") as f:
    f.write(text)
  return path


class TaskTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.data_dir = tmp.name

  def test_reads_the_published_csv(self):
    _write_csv(self.data_dir, CSV)
    spec = benchmarks.make_task("restem_hungarian_exam", self.data_dir)
    self.assertEqual(seqio.get_mixture_or_task(spec.name).splits, ("test",))
    problems = base.load_problems(spec.name, "test")  # Through seqio, as transfer reads them.
    self.assertEqual([p.id for p in problems], ["1", "2", "3"])
    self.assertEqual([p.record for p in problems], [{"question": q} for q in QUESTIONS])
    self.assertEqual([p.reference for p in problems], [None] * 3)
    for p, question in zip(problems, QUESTIONS):
      self.assertEqual(p.prompt, hungarian_exam.exam_prompt(question))
      self.assertTrue(p.prompt.endswith(f"\n\nProblem:\n{question}\n\nSolution:\n"))
    self.assertEqual(problems[0].prompt.count("I hope it is correct."), 4)
    # A spreadsheet's byte-order mark and CRLF line ends read the same.
    _write_csv(self.data_dir, "\ufeff" + CSV.replace("\n", "\r\n"))
    self.assertEqual(hungarian_exam.read_questions(self.data_dir), QUESTIONS)

  def test_has_no_reward(self):
    spec = benchmarks.make_task("restem_hungarian_exam", self.data_dir)
    self.assertFalse(spec.has_reward)
    self.assertTrue(benchmarks.make_task("restem_math", self.data_dir).has_reward)
    with self.assertRaisesRegex(ValueError, "no reward .* grading sheet"):
      spec.score([{"question": "q"}], ["x"])

  def test_exemplars_state_their_final_answer_in_minerva_format(self):
    for problem, solution, answer in hungarian_exam.EXEMPLARS:
      shot = prompts_math.math_question(problem) + solution + "\n"
      text = shot + prompts_math.math_final_line(answer)
      self.assertEqual(math_answers.minerva_answer(text), f"${answer}$")
      self.assertIn(shot, hungarian_exam.exam_prompt("q"))
    self.assertEqual(hungarian_exam.exam_prompt("q", 0), "Problem:\nq\n\nSolution:\n")
    with self.assertRaisesRegex(ValueError, "num_shots"):
      hungarian_exam.make_hungarian_exam_task(self.data_dir, num_shots=5)

  def test_errors_name_the_file(self):
    with self.assertRaisesRegex(readers.DatasetMissingError,
                                "hungarian_national_hs_finals_exam/test.csv not found"):
      hungarian_exam.read_questions(self.data_dir)
    for text, pattern in (("Problem\nx\n", "no 'Question' column"),
                          ("Question\n\"\"\nx\n", r"test\.csv:2: question 1 is empty"),
                          ('Question\n"unterminated\n', "not a valid CSV"),
                          ("Question\n", "no questions")):
      _write_csv(self.data_dir, text)
      with self.assertRaisesRegex(readers.MalformedRecordError, pattern):
        hungarian_exam.read_questions(self.data_dir)
    _write_csv(self.data_dir, "Question\nP\u00e9cs\n", encoding="latin-1")
    with self.assertRaisesRegex(readers.MalformedRecordError, "not UTF-8"):
      hungarian_exam.read_questions(self.data_dir)


def _rows(path):
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


def _save(path, rows, columns=grading_sheet.SHEET_COLUMNS):
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)


class GradingSheetTest(absltest.TestCase):

  def test_transfer_writes_the_sheet_and_adds_the_filled_points(self):
    engine = Engine(MODEL, seqio.ByteVocabulary(), partitioning.make_mesh(),
                    max_prompt_len=4096, sample_batch=4)
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    data_dir, ckpt, work = (os.path.join(tmp.name, d) for d in ("data", "ckpt", "work"))
    _write_csv(data_dir, CSV)
    params = engine.init_params(0)
    engine.save(ckpt, params)
    run = lambda: transfer.evaluate_tasks(engine, ckpt, ["restem_hungarian_exam"], work, EVAL,
                                          data_dir=data_dir)
    sheet = os.path.join(work, "restem_hungarian_exam", "grading_sheet.csv")

    result = run()["restem_hungarian_exam"]
    self.assertEqual(result, {"task": "restem_hungarian_exam", "split": "test",
                              "checkpoint": ckpt, "num_problems": 3, "test_pass@1": None,
                              "grading_sheet": sheet, "graded": 0, "points": None})
    rows = _rows(sheet)
    problems = base.load_problems("restem_hungarian_exam", "test")
    greedy = engine.generate(params, [p.prompt for p in problems], SamplingConfig(
        temperature=0.0, max_new_tokens=EVAL.max_new_tokens), EVAL.seed, range(3),
        prompts_math.MATH_STOP_STRINGS)
    self.assertEqual(rows, [{"number": str(i + 1), "question": q, "answer": g[0].text,
                             "points": ""} for i, (q, g) in enumerate(zip(QUESTIONS, greedy))])

    # A grader fills two rows (one with a fraction), sorts the rows, adds a notes column.
    rows[0]["points"], rows[2]["points"] = "2", " 1.5 "
    graded = [dict(r, notes="see b)") for r in reversed(rows)]
    _save(sheet, graded, grading_sheet.SHEET_COLUMNS + ("notes",))
    result = run()["restem_hungarian_exam"]
    self.assertEqual((result["graded"], result["points"]), (2, 3.5))
    for path in (os.path.join(work, "restem_hungarian_exam", "metrics.json"),
                 os.path.join(work, "transfer_summary.json")):
      with open(path) as f:
        record = json.load(f)
      self.assertEqual(record.get("restem_hungarian_exam", record), result)
    self.assertEqual(_rows(sheet), graded)  # Read back, never rewritten.

    _save(sheet, [dict(rows[0], points="two")] + rows[1:])
    with self.assertRaisesRegex(grading_sheet.GradingSheetError,
                                "question 1: points 'two' is not a number >= 0"):
      run()

  def test_malformed_sheets(self):
    problems = [base.Problem(id=str(i + 1), prompt="p", record={"question": q})
                for i, q in enumerate(QUESTIONS)]
    rows = [{"number": p.id, "question": p.record["question"], "answer": "a", "points": "1"}
            for p in problems]
    self.assertEqual(grading_sheet.grade(rows, problems, "s.csv"), {"graded": 3, "points": 3.0})
    # Whitespace a spreadsheet may change is not a change of question.
    spaced = [dict(rows[2], question=QUESTIONS[2].replace("\n", "\r\n  "))]
    self.assertEqual(grading_sheet.grade(rows[:2] + spaced, problems, "s.csv")["graded"], 3)
    cases = (
        ([dict(rows[0], points="-1")] + rows[1:], "question 1: points '-1' is not a number"),
        ([dict(rows[0], points="nan")] + rows[1:], "points 'nan'"),
        ([dict(rows[0], points="2,5")] + rows[1:], "points '2,5'"),
        (rows[:2], r"no row for question\(s\) 3"),
        (rows + [rows[0]], "two rows for question 1"),
        (rows + [dict(rows[0], number="34")], "a row for question '34', which this task"),
        ([dict(rows[0], question="Another question?")] + rows[1:],
         "question 1 is not the task's question 1"),
    )
    for bad, pattern in cases:
      with self.assertRaisesRegex(grading_sheet.GradingSheetError, pattern):
        grading_sheet.grade(bad, problems, "s.csv")

    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    path = os.path.join(tmp.name, "sheet.csv")
    grading_sheet.write_sheet(path, rows)
    self.assertEqual(grading_sheet.read_sheet(path), rows)  # Newlines, quotes and commas survive.
    _save(path, [{k: r[k] for k in ("number", "question", "answer")} for r in rows],
          ("number", "question", "answer"))
    with self.assertRaisesRegex(grading_sheet.GradingSheetError, r"no column\(s\) \['points'\]"):
      grading_sheet.read_sheet(path)
    with open(path, "w", encoding="utf-8") as f:
      f.write('number,question,answer,points\n1,"open quote,a,1\n')
    with self.assertRaisesRegex(grading_sheet.GradingSheetError, "not a valid CSV"):
      grading_sheet.read_sheet(path)
    with open(path, "w", encoding="latin-1") as f:
      f.write("number,question,answer,points\n1,P\u00e9cs,a,1\n")
    with self.assertRaisesRegex(grading_sheet.GradingSheetError, "not UTF-8"):
      grading_sheet.read_sheet(path)


if __name__ == "__main__":
  absltest.main()
