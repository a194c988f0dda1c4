r"""Few-shot prompts for MATH (4-shot, Minerva format) and GSM8K (8-shot chain of thought).

The exemplars are this project's own, written in each dataset's style and
checked by tests/test_tasks_prompts.py: every exemplar's solution gets reward 1
from the task's own reward against its stated answer.

MATH (Minerva format): each exemplar is

  Problem:
  <problem>

  Solution:
  <step-by-step solution>
  Final Answer: The final answer is $<answer>$. I hope it is correct.

and the prompt ends with "Problem:\n<question>\n\nSolution:\n"; a completion is
cut at "\n\nProblem:" (the model starting the next problem).

GSM8K: "Q: <question>\nA: <reasoning> The answer is <N>." per exemplar; the
prompt ends with "Q: <question>\nA:" and a completion is cut at "\n\nQ:" or "\nQ:".
"""

from __future__ import annotations

import re

from restem_jax.rewards.math_answers import last_boxed

MINERVA_FINAL = "Final Answer: The final answer is ${answer}$. I hope it is correct."

# (problem, solution, final answer). Subjects: algebra, counting & probability,
# geometry, number theory.
MATH_EXEMPLARS = (
    ("If $3x + 7 = 25$, what is the value of $x^2$?",
     "Subtracting 7 from both sides gives $3x = 18$, so $x = 6$. Therefore "
     "$x^2 = 6^2 = 36$.",
     "36"),
    ("In how many ways can a club choose a committee of 3 members from its 8 members, if the "
     "order in which they are chosen does not matter?",
     "Since order does not matter, we count combinations: "
     "$\\binom{8}{3} = \\frac{8 \\cdot 7 \\cdot 6}{3 \\cdot 2 \\cdot 1} = \\frac{336}{6} = 56$.",
     "56"),
    ("A right triangle has legs of length 9 and 12. What is the length of the altitude to its "
     "hypotenuse? Express your answer as a common fraction.",
     "The hypotenuse has length $\\sqrt{9^2 + 12^2} = \\sqrt{225} = 15$. The area of the "
     "triangle is $\\frac{1}{2} \\cdot 9 \\cdot 12 = 54$. If $h$ is the altitude to the "
     "hypotenuse, the area is also $\\frac{1}{2} \\cdot 15 \\cdot h$, so $\\frac{15h}{2} = 54$ "
     "and $h = \\frac{108}{15} = \\frac{36}{5}$.",
     "\\frac{36}{5}"),
    ("What is the remainder when $2^{100}$ is divided by 7?",
     "Since $2^3 = 8 \\equiv 1 \\pmod 7$, the powers of 2 repeat with period 3 modulo 7. "
     "As $100 = 3 \\cdot 33 + 1$, we have $2^{100} = (2^3)^{33} \\cdot 2 \\equiv 1^{33} \\cdot 2 "
     "= 2 \\pmod 7$. The remainder is 2.",
     "2"),
)

MATH_STOP_STRINGS = ("\n\nProblem:", "\nProblem:")


def math_final_line(answer: str) -> str:
  return MINERVA_FINAL.format(answer=answer)


def math_question(problem: str) -> str:
  return f"Problem:\n{problem.strip()}\n\nSolution:\n"


def math_prompt(problem: str, num_shots: int = 4) -> str:
  """The Minerva-format few-shot prompt; it ends right where the solution starts."""
  if not 0 <= num_shots <= len(MATH_EXEMPLARS):
    raise ValueError(f"num_shots={num_shots} must be in [0, {len(MATH_EXEMPLARS)}] for MATH")
  shots = "".join(math_question(p) + s + "\n" + math_final_line(a) + "\n\n"
                  for p, s, a in MATH_EXEMPLARS[:num_shots])
  return shots + math_question(problem)


def math_reference(solution: str) -> str | None:
  """The dataset solution in the prompt's format: the solution, then the Minerva line.

  None if the solution has no \\boxed{} answer (then there is no gold to state).
  """
  answer = last_boxed(solution)
  if answer is None:
    return None
  return solution.strip() + "\n" + math_final_line(answer)


# (question, reasoning ending in "The answer is N.", N).
GSM8K_EXEMPLARS = (
    ("Maria has 3 boxes with 12 pencils in each box. She gives 10 pencils to her friends. "
     "How many pencils does she have left?",
     "Maria starts with 3 * 12 = 36 pencils. After giving away 10, she has 36 - 10 = 26 "
     "pencils left. The answer is 26.", "26"),
    ("A train travels at 60 miles per hour for 2.5 hours. How many miles does it travel?",
     "Distance is speed times time, so the train travels 60 * 2.5 = 150 miles. "
     "The answer is 150.", "150"),
    ("Tom buys 4 notebooks that cost $3 each and a pen that costs $2. He pays with a $20 bill. "
     "How much change does he get?",
     "The notebooks cost 4 * 3 = 12 dollars. With the pen, Tom spends 12 + 2 = 14 dollars. "
     "His change is 20 - 14 = 6 dollars. The answer is 6.", "6"),
    ("A class has 28 students. Three quarters of them passed the test. How many students did "
     "not pass?",
     "Three quarters of 28 is 28 * 3 / 4 = 21 students who passed. So 28 - 21 = 7 students "
     "did not pass. The answer is 7.", "7"),
    ("Sam reads 15 pages of a 180-page book every day. He has been reading for 5 days. How "
     "many more days does he need to finish the book?",
     "In 5 days Sam has read 15 * 5 = 75 pages, so 180 - 75 = 105 pages are left. At 15 pages "
     "a day that takes 105 / 15 = 7 more days. The answer is 7.", "7"),
    ("A baker makes 5 dozen cookies and packs them in bags of 4. How many bags does she fill?",
     "5 dozen cookies is 5 * 12 = 60 cookies. With 4 cookies per bag she fills 60 / 4 = 15 "
     "bags. The answer is 15.", "15"),
    ("Lisa is 3 times as old as her son, who is 9 years old. How old will Lisa be in 5 years?",
     "Lisa is 3 * 9 = 27 years old now. In 5 years she will be 27 + 5 = 32. "
     "The answer is 32.", "32"),
    ("A shirt costs $40 and is on sale for 25% off. How much do 2 shirts cost on sale?",
     "The discount is 40 * 25 / 100 = 10 dollars, so one shirt costs 40 - 10 = 30 dollars. "
     "Two shirts cost 2 * 30 = 60 dollars. The answer is 60.", "60"),
)

GSM8K_STOP_STRINGS = ("\n\nQ:", "\nQ:")
_CALCULATOR = re.compile(r"<<[^<>]*>>")


def gsm8k_question(question: str) -> str:
  return f"Q: {question.strip()}\nA:"


def gsm8k_prompt(question: str, num_shots: int = 8) -> str:
  """The 8-shot chain-of-thought prompt; it ends right where the answer starts (after "A:")."""
  if not 0 <= num_shots <= len(GSM8K_EXEMPLARS):
    raise ValueError(f"num_shots={num_shots} must be in [0, {len(GSM8K_EXEMPLARS)}] for GSM8K")
  shots = "".join(gsm8k_question(q) + " " + a + "\n\n" for q, a, _ in GSM8K_EXEMPLARS[:num_shots])
  return shots + gsm8k_question(question)


def gsm8k_reference(answer: str) -> str:
  """A GSM8K answer in the exemplars' format: calculator notes dropped, "#### N" ->
  "The answer is N."; one line, led by the space that follows "A:"."""
  body, _, final = answer.rpartition("####")
  body = _CALCULATOR.sub("", body).strip()
  steps = " ".join(line.strip() for line in body.splitlines() if line.strip())
  final = final.strip().replace(",", "")
  return f" {steps} The answer is {final}.".replace("  ", " ")
