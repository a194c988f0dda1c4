"""APPS (Hendrycks et al. 2021): few-shot prompts with programs; all tests must pass.

Splits (of the chosen difficulties, introductory by default as in the paper):
train, test (introductory: 1,000) and labelled (train problems with a human
solution; reference = the first solution). Problems without tests are dropped
(they cannot be rewarded). A problem with `fn_name` gets call-based exemplars,
others stdin exemplars. Reward: the reward service's "apps", run in its
sandboxed process pool through `TaskSpec.score_batch`.
"""

from __future__ import annotations

from typing import Sequence


from restem_jax import rewards
from restem_jax.tasks import base, common, prompts_code, readers


def reward(record, completion: str) -> float:
  return rewards.get_reward("apps")(record, completion)


def score_batch(records, completions):
  return rewards.score_batch("apps", records, completions, progress=False)


def apps_problems(data_dir: str, split: str, difficulties: Sequence[str] = ("introductory",),
                  num_shots: int = 2) -> list[base.Problem]:
  unknown = set(difficulties) - set(readers.APPS_DIFFICULTIES)
  if unknown:
    raise ValueError(f"APPS difficulties {sorted(unknown)} unknown; use "
                     f"{readers.APPS_DIFFICULTIES}")
  out, records = [], readers.read_apps(data_dir, split)
  for pid, record in records:
    if record["difficulty"] not in difficulties or not record["input_output"]:
      continue
    call_based = prompts_code.is_call_based(record)
    prompt = prompts_code.apps_prompt(record["question"], record["starter_code"], call_based,
                                      num_shots)
    reference = record["solutions"][0] if record["solutions"] else None
    out.append(base.Problem(id=pid, prompt=prompt, record=record, reference=reference))
  if not out:  # A run on no problems would "succeed" and report nothing.
    raise readers.MalformedRecordError(
        f"APPS {split} split under {data_dir}: none of its {len(records)} problems has tests "
        f"and difficulty {' or '.join(difficulties)}")
  return out


def extract_answer(completion: str):
  """Programs are not voted on as answers; the stripped code stands for itself."""
  return completion.strip() or None


def make_apps_task(data_dir: str | None = None, vocabulary=None, num_shots: int = 2,
                   difficulties: Sequence[str] = ("introductory",),
                   max_train: int | None = None, train_seed: int = 0,
                   train_ids_file: str | None = None, name: str = "restem_apps") -> base.TaskSpec:
  """Registers APPS as `name` and returns its TaskSpec (data read lazily from data_dir)."""
  data_dir = data_dir or common.default_data_dir()
  difficulties = tuple(difficulties)
  prompts_code.apps_prompt("", "", False, num_shots)
  loaders = common.split_loaders(
      lambda split: apps_problems(data_dir, split, difficulties, num_shots))
  return common.register_benchmark(name, "apps", loaders, prompts_code.APPS_STOP_STRINGS,
                                   vocabulary, extract_answer, max_train, train_seed,
                                   train_ids_file, reward=reward, score_batch=score_batch)
