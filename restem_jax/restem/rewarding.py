"""Rewards are computed once, on process 0, and broadcast.

A sandboxed program's verdict can depend on load (timeouts), so processes
scoring on their own could disagree on a reward, then on the kept set and
early stopping, and deadlock; scoring once also saves N-1 hosts the CPU.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from restem_jax.engine import multihost
from restem_jax.tasks.base import Record, TaskSpec


def score(task: TaskSpec, records: Sequence[Record], completions: Sequence[str]) -> list[float]:
  """The task's rewards of (record, completion) pairs, identical on every process."""
  if not multihost.is_multiprocess():
    return task.score(records, completions)
  rewards = np.zeros(len(completions), np.float32)
  if jax.process_index() == 0:
    rewards[:] = task.score(records, completions)
  return [float(r) for r in multihost.agree(rewards).reshape(-1)]
