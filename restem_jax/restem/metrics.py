"""Evaluation metrics shared by the loop and the reward CLI."""

from __future__ import annotations

import collections
from typing import Any, Hashable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k of Chen et al. (2021): 1 - C(n-c, k) / C(n, k).

  Computed as a running product so large n does not overflow.
  """
  if not 0 <= c <= n:
    raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
  if k < 1 or k > n:
    raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_vote(answers: Sequence[Hashable | None]) -> Hashable | None:
  """Most common non-None answer; ties go to the answer seen first."""
  counts = collections.Counter(a for a in answers if a is not None)
  if not counts:
    return None
  best = max(counts.values())
  return next(a for a in answers if a is not None and counts[a] == best)


def subtask_metrics(subtasks: Sequence[str], rewards: Sequence[float]) -> dict[str, Any]:
  """Accuracy per subtask and their unweighted mean (BIG-Bench Hard's headline number)."""
  if len(subtasks) != len(rewards):
    raise ValueError(f"{len(subtasks)} subtasks for {len(rewards)} rewards")
  by_subtask: dict[str, list[float]] = collections.defaultdict(list)
  for subtask, reward in zip(subtasks, rewards):
    by_subtask[subtask].append(float(reward))
  accuracy = {s: float(np.mean(r)) for s, r in sorted(by_subtask.items())}
  return {"subtask_accuracy": accuracy,
          "macro_accuracy": float(np.mean(list(accuracy.values()))) if accuracy else 0.0}
