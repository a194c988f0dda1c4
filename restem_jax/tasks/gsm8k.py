"""GSM8K (Cobbe et al. 2021): 8-shot chain-of-thought prompts, numeric answer match.

Splits: train (7,473), test (1,319), labelled (= train; reference = the dataset
answer with calculator annotations dropped, ending "The answer is N.").
In the paper GSM8K is a transfer (evaluation-only) task for MATH-trained models.
"""

from __future__ import annotations


from restem_jax import rewards
from restem_jax.tasks import base, common, prompts_math, readers


def gsm8k_problems(data_dir: str, split: str, num_shots: int = 8) -> list[base.Problem]:
  return [base.Problem(id=pid, prompt=prompts_math.gsm8k_prompt(record["question"], num_shots),
                       record=record, reference=prompts_math.gsm8k_reference(record["answer"]))
          for pid, record in readers.read_gsm8k(data_dir, split)]


def extract_answer(completion: str):
  return rewards.extract_answer("gsm8k", completion)


def make_gsm8k_task(data_dir: str | None = None, vocabulary=None, num_shots: int = 8,
                    max_train: int | None = None, train_seed: int = 0,
                    train_ids_file: str | None = None,
                    name: str = "restem_gsm8k") -> base.TaskSpec:
  """Registers GSM8K as `name` and returns its TaskSpec (data read lazily from data_dir)."""
  data_dir = data_dir or common.default_data_dir()
  prompts_math.gsm8k_prompt("", num_shots)
  loaders = common.split_loaders(lambda split: gsm8k_problems(data_dir, split, num_shots))
  return common.register_benchmark(name, "gsm8k", loaders, prompts_math.GSM8K_STOP_STRINGS,
                                   vocabulary, extract_answer, max_train, train_seed,
                                   train_ids_file)
