"""The CPU demo task, "pair sum": find the one pair of listed numbers that adds up to a target.

A problem is a target followed by `num_numbers` distinct numbers in [low, high]
(two-digit by default); exactly one pair among them sums to the target:

  prompt:    "94: 12 47 85 33 61 29\\n"
  solution:  "33+61"      (the pair; "33+61=94", with the sum, is accepted too)

Why this task (see benchmarks/README_demo.md):
- A correct final answer implies a correct solution. The reward checks the
  whole line: both numbers appear in the list, they are different entries,
  and they add up to the target (a written sum, if any, must be it). Because the
  pair is unique, every rewarded sample is the reference solution (up to the
  order of the two numbers): ReST^EM never keeps a lucky sample with wrong
  steps, which is what sank a multi-step arithmetic scratchpad here.
- Sampling explores genuinely different choices (which pair to write), so
  pass@K on the answer-only pool is far above greedy pass@1, and each solved
  pool problem is a new verified training example.
- A guess is rarely right: a uniformly random pair of listed numbers is right
  with probability 1 / C(num_numbers, 2) (1/15 = 6.7% for 6 numbers, 1/28 =
  3.6% for 8); a random two-digit pair with the right sum is right far less.

Splits: "labelled" (with reference solutions), "train" (the answer-only pool:
the record holds the answer, no reference) and "test". One seeded stream of
distinct problems is cut into test, then labelled, then train, so no two
splits share a problem, and the test split depends only on (seed, num_test,
num_numbers).
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from typing import Any, Hashable, Mapping

import seqio

from restem_jax.tasks import base

_SOLUTION = re.compile(r"^\s*(\d{1,3})\s*\+\s*(\d{1,3})\s*(?:=\s*(\d{1,3}))?\s*$")
LOW, HIGH = 10, 99  # Default inclusive range of the listed numbers.


def make_problem(rng: random.Random, num_numbers: int, low: int = LOW,
                 high: int = HIGH) -> tuple[list[int], int, tuple[int, int]]:
  """Draws (numbers, target, (i, j)) with exactly one pair i < j summing to target."""
  while True:
    numbers = rng.sample(range(low, high + 1), num_numbers)
    i, j = sorted(rng.sample(range(num_numbers), 2))
    target = numbers[i] + numbers[j]
    pairs = [(a, b) for a, b in itertools.combinations(range(num_numbers), 2)
             if numbers[a] + numbers[b] == target]
    if pairs == [(i, j)]:
      return numbers, target, (i, j)


def format_prompt(numbers, target) -> str:
  return f"{target}: " + " ".join(str(n) for n in numbers) + "\n"


def format_solution(numbers, target, pair) -> str:
  """The reference: the pair in the order the numbers are listed, then the sum."""
  i, j = pair
  return f"{numbers[i]}+{numbers[j]}"


def parse(completion: str) -> tuple[int, int, int] | None:
  """(a, b, written sum or None) of the first line, or None if it is not `a+b` / `a+b=s`."""
  line = completion.split("\n", 1)[0]
  match = _SOLUTION.match(line)
  if not match:
    return None
  a, b, written = match.groups()
  return int(a), int(b), (int(written) if written is not None else None)


def reward(record: Mapping[str, Any], completion: str) -> float:
  """1.0 iff the completion is `a+b` (or `a+b=s`, s = target) naming two different listed
  numbers that add up to the target; anything else on the line is rejected."""
  parsed = parse(completion)
  if parsed is None:
    return 0.0
  a, b, written = parsed
  numbers, target = list(record["numbers"]), int(record["target"])
  ok = (a != b and a in numbers and b in numbers  # Listed numbers are distinct.
        and a + b == target and written in (None, target))
  return 1.0 if ok else 0.0


def extract_answer(completion: str) -> Hashable | None:
  """The unordered pair a completion names (for majority voting), or None."""
  parsed = parse(completion)
  if parsed is None:
    return None
  a, b, _ = parsed
  return (min(a, b), max(a, b))


def guess_probability(num_numbers: int) -> float:
  """Chance that a uniformly random pair of listed numbers is the answer."""
  return 1.0 / (num_numbers * (num_numbers - 1) // 2)


@functools.lru_cache(maxsize=8)
def generate(seed: int, num_labelled: int, num_train: int, num_test: int,
             num_numbers: int, low: int = LOW,
             high: int = HIGH) -> dict[str, tuple[base.Problem, ...]]:
  """All splits, from one seeded stream of distinct problems (test, labelled, train)."""
  key = f"pair_sum/{seed}/{num_numbers}" + ("" if (low, high) == (LOW, HIGH) else f"/{low}-{high}")
  rng = random.Random(key)
  sizes = {"test": num_test, "labelled": num_labelled, "train": num_train}
  seen: set[str] = set()
  splits: dict[str, tuple[base.Problem, ...]] = {}
  for split, size in sizes.items():
    problems = []
    while len(problems) < size:
      numbers, target, pair = make_problem(rng, num_numbers, low, high)
      prompt = format_prompt(numbers, target)
      # The same numbers in another order and the same target are the same
      # problem: keep splits disjoint by content, not only by prompt text.
      key = (target, tuple(sorted(numbers)))
      if key in seen:
        continue
      seen.add(key)
      record = {"numbers": numbers, "target": target,
                "answer": [numbers[pair[0]], numbers[pair[1]]]}
      reference = format_solution(numbers, target, pair) if split == "labelled" else None
      problems.append(base.Problem(id=f"{split}-{len(problems)}", prompt=prompt,
                                   record=record, reference=reference))
    splits[split] = tuple(problems)
  return splits


def make_demo_task(name: str = "demo_pair_sum", num_labelled: int = 1000,
                   num_train: int = 8192, num_test: int = 1024, num_numbers: int = 6,
                   low: int = LOW, high: int = HIGH, seed: int = 0) -> base.TaskSpec:
  """Builds and registers the pair-sum task; returns its TaskSpec."""
  if num_numbers < 3:
    raise ValueError(f"num_numbers={num_numbers} must be >= 3 for a search to exist.")
  if low < 0 or high - low + 1 < 2 * num_numbers:
    raise ValueError(f"numbers range [{low}, {high}] is too small for {num_numbers} numbers.")
  args = (seed, num_labelled, num_train, num_test, num_numbers, low, high)
  splits = ("labelled", "train", "test")

  def load_split(split: str):
    if split not in splits:
      raise ValueError(f"task {name!r} has no split {split!r}; it has {list(splits)}.")
    return generate(*args)[split]

  return base.register(base.TaskSpec(
      name=name, load_split=load_split, splits=splits, reward=reward,
      extract_answer=extract_answer, stop_strings=("\n",),
      vocabulary=seqio.ByteVocabulary()))
