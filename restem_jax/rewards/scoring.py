"""The tasks: how to score one (problem, completion) pair and how long to allow."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from restem_jax.rewards import apps, bbh, humaneval, math_answers
from restem_jax.rewards.sandbox import Sandbox

TASKS = ("math", "gsm8k", "apps", "humaneval", "bbh")
CODE_TASKS = ("apps", "humaneval")


# A worker restarted for an item imports sympy and math-verify before it
# checks it; this allows for that on a loaded host.
_COLD_START_S = 4.0


@dataclasses.dataclass(frozen=True)
class TaskOptions:
  """Timeouts in seconds; `math_timeout` bounds one whole answer check.

  `allow_unsandboxed`: run code rewards' programs even where no sandbox
  backend works (the "none" backend), instead of refusing. Unsafe on any
  machine with data or credentials a model-written program could reach.
  """
  humaneval_timeout: float = humaneval.DEFAULT_TIMEOUT
  apps_timeout: float = apps.DEFAULT_TIMEOUT
  # The pool's kill is the last resort, for C code no alarm interrupts: it
  # comes after math-verify's own limits end a check, in a worker that may
  # have to start first. Normal answers take milliseconds, never near it.
  math_timeout: float = math_answers.CHECK_LIMIT_S + _COLD_START_S
  allow_unsandboxed: bool = False


def check_task(task: str) -> None:
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def score(task: str, problem: Mapping[str, Any], completion: str,
          sandbox: Callable[[], Sandbox],
          options: TaskOptions = TaskOptions()) -> tuple[float, str]:
  """(reward, human-readable result) for one completion.

  `sandbox` is a factory so that math-only workers never start one.
  """
  check_task(task)
  if not isinstance(completion, str):
    raise TypeError(f"completion must be a str, got {type(completion).__name__}")
  if task == "math":
    return math_answers.score_math(problem, completion)
  if task == "gsm8k":
    return math_answers.score_gsm8k(problem, completion)
  if task == "bbh":
    return bbh.score_bbh(problem, completion)
  if task == "humaneval":
    return humaneval.score_humaneval(problem, completion, sandbox(),
                                     options.humaneval_timeout)
  return apps.score_apps(problem, completion, sandbox(), options.apps_timeout)


def deadline(task: str, problem: Mapping[str, Any],
             options: TaskOptions = TaskOptions()) -> float:
  """Seconds after which the pool kills the worker scoring this item.

  For code the sandbox enforces the real limits; this only catches a stuck
  worker, so it is generous (it includes starting a sandbox).
  """
  if task in ("math", "gsm8k", "bbh"):  # BBH: string matching, well within the math limit.
    return options.math_timeout
  if task == "humaneval":
    return options.humaneval_timeout + 60
  try:
    n_tests = len(apps.parse_tests(problem)[0])
  except (ValueError, TypeError):
    n_tests = 1
  return n_tests * (options.apps_timeout + 1) + 60
