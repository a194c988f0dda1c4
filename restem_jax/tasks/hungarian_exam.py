r"""The 2023 Hungarian national high-school mathematics finals (evaluation only, graded by hand).

Data: the 33 questions as keirp / xAI published them for evaluating language
models (the Hugging Face dataset keirp/hungarian_national_hs_finals_exam), as
DATA_DIR/hungarian_national_hs_finals_exam/test.csv: a CSV with a `Question`
column (LaTeX, commas, quotes and newlines inside quoted fields), one row per
question. Other columns are ignored.

One split, "test"; problem ids are the question numbers "1".."33" (row order);
records {"question": ...}. The prompt is this project's own: 4 worked
exemplars (original high-school problems) in MATH's Minerva format, then
"Problem:\n<question>\n\nSolution:\n"; completions stop where the model starts
another problem.

There is no answer key, so the task has no reward: `python -m
restem_jax.transfer --tasks=restem_hungarian_exam` writes a grading sheet of
the greedy answers to fill by hand (as the paper graded the exam).
"""

from __future__ import annotations

import csv
import io
import os

from restem_jax import rewards
from restem_jax.tasks import base, common, prompts_math, readers

ROOT = "hungarian_national_hs_finals_exam"
QUESTION_COLUMN = "Question"

# (problem, solution, final answer), written for this project in the exam's style:
# an equation, a two-part probability question, a triangle, a sequence.
EXEMPLARS = (
    ("Solve the equation $\\log_2(x+3) + \\log_2(x-3) = 4$ on the set of real numbers.",
     "Both logarithms are defined only for $x > 3$. By the product rule, "
     "$\\log_2\\left((x+3)(x-3)\\right) = 4$, so $x^2 - 9 = 2^4 = 16$ and $x^2 = 25$. Of "
     "$x = 5$ and $x = -5$ only $x = 5$ satisfies $x > 3$, and it is a solution: "
     "$\\log_2 8 + \\log_2 2 = 3 + 1 = 4$.",
     "5"),
    ("A bag contains 4 red and 6 blue marbles. We draw two marbles at random, without "
     "replacement.\na) What is the probability that both marbles are red?\n"
     "b) What is the probability that the two marbles have different colours?",
     "There are $\\binom{10}{2} = 45$ equally likely pairs of marbles.\n"
     "a) $\\binom{4}{2} = 6$ of the pairs are both red, so the probability is "
     "$\\frac{6}{45} = \\frac{2}{15}$.\n"
     "b) A pair of different colours is one red and one blue marble: there are "
     "$4 \\cdot 6 = 24$ such pairs, so the probability is $\\frac{24}{45} = \\frac{8}{15}$.",
     "\\text{a) } \\frac{2}{15}, \\text{ b) } \\frac{8}{15}"),
    ("In the triangle $ABC$, $AB = 5$ cm, $AC = 8$ cm and the angle at $A$ is $60^\\circ$. "
     "How long is the side $BC$, and what is the area of the triangle?",
     "By the law of cosines, $BC^2 = 5^2 + 8^2 - 2 \\cdot 5 \\cdot 8 \\cos 60^\\circ "
     "= 25 + 64 - 40 = 49$, so $BC = 7$ cm. The area is "
     "$\\frac{1}{2} \\cdot 5 \\cdot 8 \\cdot \\sin 60^\\circ = 20 \\cdot \\frac{\\sqrt{3}}{2} "
     "= 10\\sqrt{3}$ cm$^2$.",
     "BC = 7 \\text{ cm}, \\text{ area } 10\\sqrt{3} \\text{ cm}^2"),
    ("The sum of the first three terms of an increasing arithmetic sequence is 21, and their "
     "product is 231. What is the first term of the sequence?",
     "Write the three terms as $a - d$, $a$ and $a + d$ with $d > 0$. Their sum is $3a = 21$, "
     "so $a = 7$. Their product is $(7 - d) \\cdot 7 \\cdot (7 + d) = 7(49 - d^2) = 231$, so "
     "$49 - d^2 = 33$ and $d^2 = 16$. As the sequence increases, $d = 4$, and the first term "
     "is $7 - 4 = 3$ (the terms are 3, 7, 11: sum 21, product 231).",
     "3"),
)


def exam_prompt(question: str, num_shots: int = 4) -> str:
  """The few-shot prompt; it ends right where the solution starts (as MATH's)."""
  if not 0 <= num_shots <= len(EXEMPLARS):
    raise ValueError(f"num_shots={num_shots} must be in [0, {len(EXEMPLARS)}] for the exam")
  shots = "".join(prompts_math.math_question(p) + s + "\n" + prompts_math.math_final_line(a)
                  + "\n\n" for p, s, a in EXEMPLARS[:num_shots])
  return shots + prompts_math.math_question(question)


def csv_path(data_dir: str) -> str:
  return os.path.join(data_dir, ROOT, "test.csv")


def read_questions(data_dir: str) -> list[str]:
  """The questions of test.csv, in row order."""
  path = csv_path(data_dir)
  if not os.path.isfile(path):
    raise readers.DatasetMissingError(
        f"Hungarian exam: {path} not found. Place test.csv of the Hugging Face dataset "
        f"keirp/hungarian_national_hs_finals_exam (a '{QUESTION_COLUMN}' column, 33 rows) "
        f"at {path} (see docs/tasks.md).")
  text = readers._read_utf8(path)  # pylint: disable=protected-access
  # A spreadsheet's byte-order mark and line ends, also inside quoted questions, are not text.
  text = text.removeprefix("\ufeff").replace("\r\n", "\n")
  # A stray quote would otherwise swallow the rest of the file into one question.
  rows = csv.DictReader(io.StringIO(text, newline=""), strict=True)
  try:
    if QUESTION_COLUMN not in (rows.fieldnames or []):
      raise readers.MalformedRecordError(
          f"{path}: no '{QUESTION_COLUMN}' column; the header is {rows.fieldnames}")
    questions = []
    for row in rows:
      question = (row[QUESTION_COLUMN] or "").strip()
      if not question:
        raise readers.MalformedRecordError(
            f"{path}:{rows.line_num}: question {len(questions) + 1} is empty")
      questions.append(question)
  except csv.Error as e:
    raise readers.MalformedRecordError(f"{path}:{rows.line_num}: not a valid CSV ({e})") from None
  if not questions:
    raise readers.MalformedRecordError(f"{path}: no questions")
  return questions


def exam_problems(data_dir: str, num_shots: int = 4) -> list[base.Problem]:
  return [base.Problem(id=str(number), prompt=exam_prompt(question, num_shots),
                       record={"question": question})
          for number, question in enumerate(read_questions(data_dir), 1)]


def extract_answer(completion: str):
  return rewards.extract_answer("math", completion)


def make_hungarian_exam_task(data_dir: str | None = None, vocabulary=None, num_shots: int = 4,
                             name: str = "restem_hungarian_exam") -> base.TaskSpec:
  """Registers the exam as `name` (no reward: graded by hand); data read lazily."""
  data_dir = data_dir or common.default_data_dir()
  exam_prompt("", num_shots)  # Validates num_shots now, not at first read.
  loaders = {"test": lambda: exam_problems(data_dir, num_shots)}
  return common.register_benchmark(name, None, loaders, prompts_math.MATH_STOP_STRINGS,
                                   vocabulary, extract_answer)
