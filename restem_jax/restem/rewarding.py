"""Rewards are computed once, on process 0, and broadcast.

A sandboxed program's verdict can depend on load (timeouts), so processes
scoring on their own could disagree on a reward, then on the kept set and
early stopping, and deadlock; scoring once also saves N-1 hosts the CPU.
"""

from __future__ import annotations

import logging
from typing import Sequence

import jax
import numpy as np

from restem_jax import rewards
from restem_jax.engine import multihost
from restem_jax.engine.config import ConfigError
from restem_jax.tasks.base import Record, TaskSpec


def prepare(task: TaskSpec, allow_unsandboxed: bool) -> None:
  """Sets the reward pools' sandbox policy, and refuses at the start, before any
  sampling, a code task that no sandbox can score here without the opt-out."""
  if allow_unsandboxed:
    logging.warning("run.allow_unsandboxed = True: where no sandbox backend works, code "
                    "rewards run model-written programs UNSANDBOXED (sandbox here: %s)",
                    rewards.isolation_description())
  rewards.set_default_options(rewards.TaskOptions(allow_unsandboxed=allow_unsandboxed))
  if not task.has_reward:
    return
  error = ""
  if jax.process_index() == 0:  # the only process that scores
    try:
      task.score([], [])  # a code task refuses even an empty batch
    except rewards.SandboxUnavailableError as e:
      error = str(e)
  if not multihost.agree(np.int32(not error)):
    raise ConfigError(error or "process 0 cannot score this task's programs (its log says why).")


def score(task: TaskSpec, records: Sequence[Record], completions: Sequence[str]) -> list[float]:
  """The task's rewards of (record, completion) pairs, identical on every process."""
  if not multihost.is_multiprocess():
    return task.score(records, completions)
  rewards = np.zeros(len(completions), np.float32)
  if jax.process_index() == 0:
    rewards[:] = task.score(records, completions)
  return [float(r) for r in multihost.agree(rewards).reshape(-1)]
