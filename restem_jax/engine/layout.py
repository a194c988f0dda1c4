"""Static shapes of sampler calls: size buckets and the prompts' shared head."""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Shared heads are cut to a multiple of this: a task's prompts (one system message or
# few-shot head) give one head length, hence one compiled prefill per prompt bucket.
HEAD_GRANULE = 8


def buckets(minimum: int, maximum: int) -> tuple[int, ...]:
  """minimum, doubling, up to and including maximum."""
  sizes, size = [], minimum
  while size < maximum:
    sizes.append(size)
    size *= 2
  return tuple(sizes) + (maximum,)


def pick(size: int, sizes: Sequence[int]) -> int:
  """The smallest bucket that holds `size`."""
  return next(b for b in sizes if b >= size)


def round_up(size: int, multiple: int) -> int:
  return -(-size // multiple) * multiple


def shared_head(prompts: Sequence[Sequence[int]]) -> int:
  """Tokens every prompt starts with, leaving each at least one of its own (0 if under 8)."""
  first = np.asarray(prompts[0])
  common = min(map(len, prompts)) - 1
  for prompt in prompts[1:]:
    differ = np.flatnonzero(np.asarray(prompt[:common]) != first[:common])
    common = int(differ[0]) if differ.size else common
  return common // HEAD_GRANULE * HEAD_GRANULE
