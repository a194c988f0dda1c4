"""The CPU demo task (pair sum): generator, reward, answer extraction, registration."""

import itertools
import random

from absl.testing import absltest

from restem_jax.tasks import base, pair_sum

SIZES = dict(num_labelled=300, num_train=600, num_test=200)


def splits(seed=0, num_numbers=6):
  spec = pair_sum.make_demo_task(name=f"test_pair_sum_{seed}_{num_numbers}",
                                 num_numbers=num_numbers, seed=seed, **SIZES)
  return spec, {s: spec.load_split(s) for s in spec.splits}


class PairSumTest(absltest.TestCase):

  def test_reference_solutions_are_rewarded(self):
    for num_numbers in (5, 6, 8):
      _, data = splits(num_numbers=num_numbers)
      for split, problems in data.items():
        for p in problems:
          a, b = p.record["answer"]
          if split == "labelled":
            self.assertEqual(p.reference, f"{a}+{b}")
          else:
            self.assertIsNone(p.reference)
          for good in (f"{a}+{b}", f"{b}+{a}", f"{a}+{b}={p.record['target']}", f" {a} + {b}\n"):
            self.assertEqual(pair_sum.reward(p.record, good), 1.0, (p, good))

  def test_exactly_one_pair_sums_to_the_target(self):
    _, data = splits()
    for problems in data.values():
      for p in problems:
        numbers, target = p.record["numbers"], p.record["target"]
        self.assertLen(set(numbers), 6)
        self.assertTrue(all(pair_sum.LOW <= n <= pair_sum.HIGH for n in numbers))
        pairs = [(a, b) for a, b in itertools.combinations(numbers, 2) if a + b == target]
        self.assertEqual(pairs, [tuple(p.record["answer"])])
        self.assertEqual(p.prompt, f"{target}: " + " ".join(map(str, numbers)) + "\n")

  def test_corrupted_solutions_are_rejected(self):
    _, data = splits()
    rng = random.Random(0)
    for p in data["test"]:
      numbers, target = p.record["numbers"], p.record["target"]
      a, b = p.record["answer"]
      others = [n for n in numbers if n not in (a, b)]
      c = rng.choice(others)
      bad = [
          "", "\n", f"{a}", f"{a}+", f"+{b}", f"{a}-{b}", f"{a}+{b}+{c}",
          f"{a}+{c}", f"{c}+{b}",                       # a wrong pair from the list
          f"{a}+{target - a}" if target - a != b else f"{a}+{c}",
          f"{a}+{b}={target + 1}",                      # right pair, wrong written sum
          f"{a}+{b}={target}!", f"x{a}+{b}", f"{a}+{b} {c}",
      ]
      # A pair with the right sum that is not in the list (a wrong step).
      for x in range(pair_sum.LOW, pair_sum.HIGH + 1):
        if x not in numbers and target - x not in numbers and x != target - x:
          bad.append(f"{x}+{target - x}")
          break
      # The right sum from one listed number used twice.
      if target % 2 == 0 and target // 2 in numbers:
        bad.append(f"{target // 2}+{target // 2}")
      for completion in bad:
        self.assertEqual(pair_sum.reward(p.record, completion), 0.0, (p, completion))
      # Only the first line counts.
      self.assertEqual(pair_sum.reward(p.record, f"{a}+{c}\n{a}+{b}"), 0.0)
      self.assertEqual(pair_sum.reward(p.record, f"{a}+{b}\n{a}+{c}"), 1.0)

  def test_extract_answer(self):
    self.assertEqual(pair_sum.extract_answer("33+61"), (33, 61))
    self.assertEqual(pair_sum.extract_answer("61+33=94\nmore"), (33, 61))
    self.assertIsNone(pair_sum.extract_answer("sixty"))
    self.assertIsNone(pair_sum.extract_answer(""))

  def test_splits_are_disjoint_and_sized(self):
    _, data = splits()
    self.assertEqual({s: len(v) for s, v in data.items()},
                     {"labelled": 300, "train": 600, "test": 200})
    keys = {s: {(p.record["target"], tuple(sorted(p.record["numbers"]))) for p in v}
            for s, v in data.items()}
    for s in data:
      self.assertLen(keys[s], len(data[s]))  # No duplicates inside a split either.
    for x, y in itertools.combinations(keys, 2):
      self.assertEmpty(keys[x] & keys[y], (x, y))
    ids = [p.id for v in data.values() for p in v]
    self.assertLen(set(ids), len(ids))

  def test_generation_is_deterministic_and_seeded(self):
    pair_sum.generate.cache_clear()
    _, first = splits(seed=3)
    pair_sum.generate.cache_clear()
    _, again = splits(seed=3)
    self.assertEqual(first, again)
    _, other = splits(seed=4)
    self.assertNotEqual([p.prompt for p in first["test"]], [p.prompt for p in other["test"]])
    # The test split does not move when the labelled or pool sizes change.
    bigger = pair_sum.make_demo_task(name="test_pair_sum_bigger", seed=3, num_labelled=50,
                                     num_train=900, num_test=200)
    self.assertEqual(bigger.load_split("test"), first["test"])

  def test_guessing_is_rarely_right(self):
    # A uniformly random pair of 6 listed numbers: 1 / C(6, 2) = 6.7% (the demo lists 4: 1/6).
    self.assertAlmostEqual(pair_sum.guess_probability(6), 1 / 15)
    _, data = splits()
    rng = random.Random(1)
    hits = sum(pair_sum.reward(p.record, "{}+{}".format(*rng.sample(p.record["numbers"], 2)))
               for p in data["test"] * 20)
    self.assertLess(hits / (20 * len(data["test"])), 0.10)
    # Always answering the first two listed numbers is right about as rarely.
    first_two = sum(pair_sum.reward(p.record, "{}+{}".format(*p.record["numbers"][:2]))
                    for p in data["test"])
    self.assertLess(first_two / len(data["test"]), 0.15)

  def test_registered_and_readable_through_seqio(self):
    spec, data = splits()
    self.assertIs(base.get(spec.name), spec)
    self.assertEqual(spec.stop_strings, ("\n",))
    back = base.load_problems(spec.name, "labelled")
    self.assertEqual([(p.id, p.prompt, p.reference) for p in back],
                     [(p.id, p.prompt, p.reference) for p in data["labelled"]])
    self.assertEqual(dict(back[0].record), dict(data["labelled"][0].record))
    with self.assertRaises(ValueError):
      spec.load_split("validation")


if __name__ == "__main__":
  absltest.main()
