"""MATH (Hendrycks et al. 2021): 4-shot Minerva-format prompts, answer-checked reward.

Splits: train (7,500), test (5,000), labelled (train problems whose solution has
a \\boxed{} answer; reference = the solution + the Minerva final-answer line), and
math500 (MATH-500, Lightman et al. 2023: 500 of the test problems, with the ids,
records and prompts they have in test, from DATA_DIR/MATH/math500/test.jsonl).
Reward: the reward service's "math" (Minerva extraction and normalisation,
then a sympy equivalence check); maj@k votes on the normalised answer.
"""

from __future__ import annotations

from restem_jax import rewards
from restem_jax.tasks import base, common, prompts_math, readers


def math_problems(data_dir: str, split: str, num_shots: int = 4) -> list[base.Problem]:
  pairs = (readers.read_math500(data_dir) if split == "math500"
           else readers.read_math(data_dir, split))
  out = []
  for pid, record in pairs:
    out.append(base.Problem(id=pid, prompt=prompts_math.math_prompt(record["problem"], num_shots),
                            record=record,
                            reference=prompts_math.math_reference(record["solution"])))
  return out


def extract_answer(completion: str):
  return rewards.extract_answer("math", completion)


def make_math_task(data_dir: str | None = None, vocabulary=None, num_shots: int = 4,
                   max_train: int | None = None, train_seed: int = 0,
                   train_ids_file: str | None = None, name: str = "restem_math") -> base.TaskSpec:
  """Registers MATH as `name` and returns its TaskSpec (data read lazily from data_dir)."""
  data_dir = data_dir or common.default_data_dir()
  prompts_math.math_prompt("", num_shots)  # Validates num_shots now, not at first read.
  loaders = common.split_loaders(lambda split: math_problems(data_dir, split, num_shots))
  loaders["math500"] = lambda: math_problems(data_dir, "math500", num_shots)
  return common.register_benchmark(name, "math", loaders, prompts_math.MATH_STOP_STRINGS,
                                   vocabulary, extract_answer, max_train, train_seed,
                                   train_ids_file)
