"""MATH answers built to jam sympy score fast, in-process and in the pool."""

import time

from absl.testing import absltest

from restem_jax import rewards
from restem_jax.rewards import math_answers as m
from restem_jax.rewards.scoring import TaskOptions

# Answers built to jam sympy: towers, huge factorials, binomials, Gamma, gcd,
# bars, roots, series and expansions. Most take it seconds to hours (much of it
# in C no alarm interrupts), several while latex2sympy parses them.
_BOMBS = [
    "9^9^9^9", "9^{9^{9^{9}}}", "2^{3^{4^{5}}}", "10^{10^{10}}", "2^{2^{11}}",
    "(10^{100})!", "\\frac{1}{(10^{100})!}", "((10^5)!)!", "(10^6)!",
    "\\binom{10^9}{3}", "\\binom{10^{100}}{10^{50}}", "\\dbinom{100000}{50000}",
    "{10^{6} \\choose 500000}", "\\Gamma(1000000)", "\\Gamma(10^{100})",
    "\\gcd(10^{10^{10}}, 6)", "\\operatorname{lcm}(2^{10^{10}}, 3)",
    "x^{10}|_{x=10^{10^{10}}}", "\\sum_{k=1}^{10^{9}} k^{k}",
    "\\prod_{k=1}^{10^{6}} k", "\\sqrt{2^{33219}+1}", "\\sqrt[10^{10^{10}}]{2}",
    "(x+y+z+w)^{200}", "(2x)^{10^{100}}", "\\pi^{10^{100}}",
    "\\operatorname{zeros}(10^{5}, 10^{5})",
]
# Equal answers among them, which must still score 1.
_EQUAL = [
    ("2^{10^{5}}", "2^{100000}"), ("2^{100000}", "2^{10^{5}}"),
    ("2^{2048}", "2^{2^{11}}"), ("2^{2005}", "4^{1002} \\cdot 2"),
    ("(10^{100})!", "(10^{50} \\cdot 10^{50})!"),
    ("\\binom{10^9}{3}", "166666666166666667000000000"),
    ("(x+y+z+w)^{200}", "(w+x+y+z)^{200}"),
]
# Normal answers with the constructs the guard looks at before parsing,
# which must still score as before.
_NORMAL = [
    ("10", "\\binom{5}{2}", True), ("24", "\\Gamma(5)", True),
    ("6", "\\gcd(12, 18)", True), ("12", "\\operatorname{lcm}(4, 6)", True),
    ("9", "x^{2}|_{x=3}", True), ("2^{100}", "2^{10^{2}}", True),
    ("\\begin{pmatrix}0&0\\\\0&0\\end{pmatrix}", "\\operatorname{zeros}(2, 2)", True),
    ("x^2+2x+1", "(x+1)^{2}", True), ("2^{2005}", "2^{2004}", False),
    ("10", "\\binom{5}{3}", True), ("11", "\\binom{5}{2}", False),
]


def _pairs():
  for bomb in _BOMBS:
    yield bomb, "5"
    yield "5", bomb


class InProcessTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    m.math_equiv("1", "2")  # imports math-verify and sympy

  def test_each_bomb_scores_zero_within_a_second(self):
    for gold, pred in _pairs():
      with self.subTest(gold=gold, pred=pred):
        start = time.monotonic()
        self.assertFalse(m.math_equiv(gold, pred))
        self.assertLess(time.monotonic() - start, 1.0)

  def test_equal_bombs_score_one_without_evaluation(self):
    for gold, pred in _EQUAL:
      with self.subTest(gold=gold, pred=pred):
        start = time.monotonic()
        self.assertTrue(m.math_equiv(gold, pred))
        self.assertLess(time.monotonic() - start, 1.0)


class PoolTest(absltest.TestCase):

  def test_bombs_score_in_the_pool_without_a_worker_restart(self):
    pairs = ([(g, p, False) for g, p in _pairs()] +
             [(g, p, True) for g, p in _EQUAL] + _NORMAL)
    problems = [{"solution": f"\\boxed{{{gold}}}"} for gold, _, _ in pairs]
    completions = [f"\\boxed{{{pred}}}" for _, pred, _ in pairs]
    # A deadline far above the 1 s a bomb may take, far below sympy's minutes.
    with rewards.RewardPool(1, options=TaskOptions(math_timeout=3.0)) as pool:
      warm = pool.submit("math", [{"solution": "\\boxed{\\frac{1}{2}}"}],
                         ["\\boxed{0.5}"], progress=False).result()
      self.assertEqual(warm[0].reward, 1.0)
      worker = pool._workers[0]  # pylint: disable=protected-access
      pid = worker.proc.pid
      items = pool.submit("math", problems, completions, progress=False).result()
      pid_after = worker.proc.pid
    expected = [float(equivalent) for _, _, equivalent in pairs]
    self.assertEqual([item.reward for item in items], expected,
                     [(p, item.result) for p, item in zip(pairs, items)])
    self.assertEqual([i.result for i in items if "timed out" in i.result], [])
    self.assertEqual(pid_after, pid)  # no restart


if __name__ == "__main__":
  absltest.main()
