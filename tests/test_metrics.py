"""pass@k against hand-computed cases, majority voting, and the filter's cap."""

import math

from absl.testing import absltest

from restem_jax.restem.e_step import Sample
from restem_jax.restem.filtering import filter_samples
from restem_jax.restem import metrics
from restem_jax.restem.metrics import majority_vote, pass_at_k


def sample(problem, completion, reward, index=0):
  return Sample(problem, "p", completion, reward, -1.0, 1, index)


class PassAtKTest(absltest.TestCase):

  def test_hand_computed_cases(self):
    self.assertAlmostEqual(pass_at_k(10, 3, 1), 0.3)  # c / n
    self.assertAlmostEqual(pass_at_k(4, 2, 2), 1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    self.assertAlmostEqual(pass_at_k(5, 1, 3), 1 - 4 / 10)  # 1 - C(4,3)/C(5,3)
    self.assertEqual(pass_at_k(5, 0, 3), 0.0)
    self.assertEqual(pass_at_k(5, 3, 3), 1.0)  # n - c < k: every k-subset has a hit
    n, c, k = 64, 7, 16
    self.assertAlmostEqual(pass_at_k(n, c, k), 1 - math.comb(n - c, k) / math.comb(n, k))

  def test_rejects_impossible_counts(self):
    with self.assertRaises(ValueError):
      pass_at_k(4, 5, 1)
    with self.assertRaises(ValueError):
      pass_at_k(4, 1, 5)

  def test_majority_vote(self):
    self.assertEqual(majority_vote(["3", None, "4", "4", "3"]), "3")  # tie: first seen
    self.assertEqual(majority_vote(["1", "2", "2"]), "2")
    self.assertIsNone(majority_vote([None, None]))


class MeanByTest(absltest.TestCase):

  def test_groups_in_sorted_order(self):
    self.assertEqual(metrics.mean_by(["Level 2", "Level 1", "Level 2"], [1.0, 0.0, 0.0]),
                     {"Level 1": 0.0, "Level 2": 0.5})
    with self.assertRaises(ValueError):
      metrics.mean_by(["a"], [])


class FilterTest(absltest.TestCase):

  def test_keeps_rewarded_samples_capped_in_sampling_order(self):
    samples = ([sample("a", f"s{i}", 1.0, i) for i in range(5)]
               + [sample("b", "x", 0.0), sample("b", "y", 1.0, 1), sample("c", "z", 0.0)])
    kept = filter_samples(samples, max_per_problem=3)
    self.assertEqual([(s.problem_id, s.completion) for s in kept],
                     [("a", "s0"), ("a", "s1"), ("a", "s2"), ("b", "y")])

  def test_duplicates_dropped_only_when_asked(self):
    samples = [sample("a", "same", 1.0, i) for i in range(3)] + [sample("a", "other", 1.0, 3)]
    self.assertLen(filter_samples(samples, 10), 4)
    self.assertEqual([s.completion for s in filter_samples(samples, 10, drop_duplicates=True)],
                     ["same", "other"])

  def test_bad_cap(self):
    with self.assertRaisesRegex(ValueError, "max_per_problem=0"):
      filter_samples([], 0)


if __name__ == "__main__":
  absltest.main()
