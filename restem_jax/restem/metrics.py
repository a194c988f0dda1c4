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


def mean_by(groups: Sequence[str], rewards: Sequence[float]) -> dict[str, float]:
  """Mean reward of each group (a subtask, a difficulty level), groups in sorted order."""
  if len(groups) != len(rewards):
    raise ValueError(f"{len(groups)} groups for {len(rewards)} rewards")
  by_group: dict[str, list[float]] = collections.defaultdict(list)
  for group, reward in zip(groups, rewards):
    by_group[group].append(float(reward))
  return {g: float(np.mean(r)) for g, r in sorted(by_group.items())}


def subtask_metrics(subtasks: Sequence[str], rewards: Sequence[float]) -> dict[str, Any]:
  """Accuracy per subtask and their unweighted mean (BIG-Bench Hard's headline number)."""
  accuracy = mean_by(subtasks, rewards)
  return {"subtask_accuracy": accuracy,
          "macro_accuracy": float(np.mean(list(accuracy.values()))) if accuracy else 0.0}
