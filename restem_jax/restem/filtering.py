"""Filter between E-step and M-step: keep rewarded samples, capped per problem."""

from __future__ import annotations

import collections
from typing import Sequence

from restem_jax.restem.e_step import Sample


def filter_samples(samples: Sequence[Sample], max_per_problem: int,
                   drop_duplicates: bool = False) -> list[Sample]:
  """Samples with reward 1, at most `max_per_problem` per problem, in sampling order.

  The cap keeps easy problems from dominating the M-step (paper: 10). Taking
  the first ones in sampling order is equivalent to a random choice, since
  samples are i.i.d.; with `drop_duplicates`, repeated identical completions
  of a problem count once.
  """
  if max_per_problem < 1:
    raise ValueError(f"max_per_problem={max_per_problem} must be >= 1.")
  counts: collections.Counter[str] = collections.Counter()
  seen: set[tuple[str, str]] = set()
  kept = []
  for sample in samples:
    if sample.reward != 1.0 or counts[sample.problem_id] >= max_per_problem:
      continue
    key = (sample.problem_id, sample.completion)
    if drop_duplicates and key in seen:
      continue
    seen.add(key)
    counts[sample.problem_id] += 1
    kept.append(sample)
  return kept
