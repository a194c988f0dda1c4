"""Binary rewards for ReST^EM: MATH, GSM8K, APPS, HumanEval and BIG-Bench Hard ("bbh").

    from restem_jax import rewards
    reward = rewards.get_reward("math")
    reward(problem, completion)                      # -> 1.0 or 0.0
    rewards.score_batch("humaneval", problems, completions)  # input order
    future = rewards.score_batch_async("apps", problems, completions)
    rewards.extract_answer("math", completion)       # for maj@k
    rewards.score_batch("bbh", [{"input": q, "target": "(A)", "subtask": s}], [completion])
    rewards.check_record("apps", problem)            # ValueError if it cannot be scored
    rewards.isolation_description()                  # "bwrap: ...", "landlock: ..." or "none: ..."

Every check runs in a pool of worker processes with a hard deadline, and
program code runs in a sandbox (see sandbox.py and docs/rewards.md); where no
sandbox backend works, code rewards raise SandboxUnavailableError unless
`TaskOptions(allow_unsandboxed=True)` (for the shared pools:
`set_default_options`). This package imports no jax or tensorflow.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Mapping, Sequence

from restem_jax.rewards.batch import (RewardInputError, RewardPool,
                                      ScoredItem, default_pool,
                                      set_default_options)
from restem_jax.rewards.math_answers import extract_answer
from restem_jax.rewards.preconditions import check_record
from restem_jax.rewards.sandbox import (Sandbox, SandboxLimits,
                                        SandboxUnavailableError,
                                        isolation_description)
from restem_jax.rewards.scoring import TASKS, TaskOptions, check_task

__all__ = [
    "TASKS", "Reward", "RewardInputError", "RewardPool", "Sandbox",
    "SandboxLimits", "SandboxUnavailableError", "ScoredItem", "TaskOptions",
    "check_record", "extract_answer", "get_reward", "isolation_description",
    "score_batch", "score_batch_async", "set_default_options",
]


class Reward:
  """`reward(problem, completion) -> 1.0 | 0.0` for one task.

  Runs in the shared default pool, so the hard timeouts and the sandbox apply
  here too; for many items use `score_batch`, which runs them in parallel.
  """

  def __init__(self, task: str):
    check_task(task)
    self.task = task

  def __call__(self, problem: Mapping[str, Any], completion: str) -> float:
    return default_pool().score(self.task, [problem], [completion],
                                progress=False)[0]

  def __repr__(self) -> str:
    return f"Reward({self.task!r})"


def get_reward(task: str) -> Reward:
  """The reward callable for "math", "gsm8k", "apps", "humaneval" or "bbh"."""
  return Reward(task)


def score_batch(task: str, problems: Sequence[Mapping[str, Any]],
                completions: Sequence[str], *, num_workers: int | None = None,
                progress: bool = True) -> list[float]:
  """Rewards (1.0 / 0.0) in input order; one worker per core by default."""
  return default_pool(num_workers).score(task, problems, completions,
                                         progress=progress)


def score_batch_async(task: str, problems: Sequence[Mapping[str, Any]],
                      completions: Sequence[str], *,
                      num_workers: int | None = None, progress: bool = False
                      ) -> concurrent.futures.Future:
  """Like score_batch but returns at once: a Future of list[float]."""
  inner = default_pool(num_workers).submit(task, problems, completions,
                                           progress=progress)
  outer: concurrent.futures.Future = concurrent.futures.Future()

  def done(f: concurrent.futures.Future) -> None:
    if f.exception() is not None:
      outer.set_exception(f.exception())
    else:
      outer.set_result([item.reward for item in f.result()])

  inner.add_done_callback(done)
  return outer
