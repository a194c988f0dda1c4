"""A tiny task for loop tests: name the largest of a few listed digits.

Random choice among the listed digits is right a third of the time, so a
barely trained model yields kept samples in every iteration: the loop's
mechanics, not learning, are what the tests check.
"""

import random

import gin
import seqio

from restem_jax.tasks import base


def _problems(split: str, count: int, seed: int):
  rng = random.Random(f"{seed}-{split}")
  out = []
  for i in range(count):
    digits = rng.sample("123456789", 3)
    answer = max(digits)
    out.append(base.Problem(id=f"{split}-{i}", prompt=" ".join(digits) + "\n",
                            # A difficulty level, as MATH records have one.
                            record={"answer": answer, "level": f"Level {int(answer) // 4}"},
                            reference=answer))
  return out


def _reward(record, completion: str) -> float:
  return float(completion.strip() == record["answer"])


@gin.configurable
def make_micro_task(num_train: int = 48, num_test: int = 16, num_labelled: int = 32,
                    seed: int = 0) -> base.TaskSpec:
  counts = {"train": num_train, "test": num_test, "labelled": num_labelled}
  return base.register(base.TaskSpec(
      name="micro_largest_digit",
      load_split=lambda split: _problems(split, counts[split], seed),
      splits=tuple(counts), reward=_reward,
      extract_answer=lambda completion: completion.strip() or None,
      stop_strings=("\n",), vocabulary=seqio.ByteVocabulary()))
