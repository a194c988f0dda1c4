"""APPS harness: stdin/stdout and call-based problems, APPS comparison rules."""

import json

from absl.testing import absltest

from restem_jax import rewards
from restem_jax.rewards import apps
from restem_jax.rewards.scoring import TaskOptions

_STDIO = {
    "problem_id": 4000, "question": "Sum two ints per line.",
    "starter_code": "",
    "input_output": json.dumps({"inputs": ["1 2\n", "10 -3\n", ["5 5"]],
                                "outputs": ["3\n", "7\n", ["10"]]}),
}
_CALL = {
    "problem_id": 4001, "question": "Return the pair reversed.",
    "starter_code": "def swap(a, b):", "fn_name": "swap",
    "input_output": json.dumps({"inputs": [[1, 2], [[3], "x"]],
                                "outputs": [[[2, 1]], [["x", [3]]]]}),
}
_LEETCODE = {
    "problem_id": 4002, "question": "Square.",
    "starter_code": "class Solution:\n    def sq(self, x):",
    "input_output": json.dumps({"fn_name": "sq", "inputs": [[3], [4]],
                                "outputs": [9, [16]]}),
}
_FLOAT = {
    "problem_id": 4003, "question": "Third.",
    "input_output": json.dumps({"inputs": ["1\n"], "outputs": ["0.3333333333\n"]}),
}


class ComparisonTest(absltest.TestCase):

  def test_stdio_whitespace_and_floats(self):
    self.assertTrue(apps.stdio_output_matches("1  2\n\n3 \n", "1 2\n3"))
    self.assertTrue(apps.stdio_output_matches("0.333333", "0.3333333333"))
    self.assertTrue(apps.stdio_output_matches("1\n2\n", ["1", "2"]))
    self.assertFalse(apps.stdio_output_matches("0.33", "0.3333333333"))
    # Integers exactly: a float tolerance would pass an off-by-one on large answers.
    self.assertFalse(apps.stdio_output_matches("123456790", "123456789"))
    self.assertFalse(apps.stdio_output_matches("1 1000000001", "1 1000000000"))
    self.assertTrue(apps.stdio_output_matches("+5 -0", "5 0"))
    self.assertTrue(apps.stdio_output_matches("123456789.0", "123456789"))
    self.assertFalse(apps.stdio_output_matches("2 1", "1 2"))
    self.assertFalse(apps.stdio_output_matches("1 2 3", "1 2"))
    self.assertFalse(apps.stdio_output_matches("YES", "yes"))
    self.assertFalse(apps.stdio_output_matches("", "0"))

  def test_call_outputs(self):
    self.assertTrue(apps.call_output_matches([2, 1], [[2, 1]]))
    self.assertTrue(apps.call_output_matches(9, 9))
    self.assertFalse(apps.call_output_matches([1, 2], [[2, 1]]))

  def test_fenced_code(self):
    self.assertEqual(apps.extract_code("Here:\n```python\nprint(1)\n```\n"),
                     "print(1)\n")
    self.assertEqual(apps.extract_code("print(2)"), "print(2)")

  def test_bad_tests_raise(self):
    with self.assertRaisesRegex(ValueError, "input_output"):
      apps.parse_tests({"input_output": ""})
    with self.assertRaisesRegex(ValueError, "equal"):
      apps.parse_tests({"input_output": '{"inputs": [1], "outputs": []}'})


class AppsScoringTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.pool = rewards.RewardPool(2, options=TaskOptions(apps_timeout=2.0))

  @classmethod
  def tearDownClass(cls):
    cls.pool.close()
    super().tearDownClass()

  def score(self, problems, completions):
    return self.pool.submit("apps", problems, completions,
                            progress=False).result()

  def test_stdio(self):
    items = self.score([_STDIO] * 6, [
        "a, b = map(int, input().split())\nprint(a + b)\n",
        "import sys\na, b = map(int, sys.stdin.buffer.read().split())\n"
        "print(a + b)\nsys.exit(0)\n",
        "a, b = map(int, open(0).read().split())\nprint(a + b)\nexit()\n",
        "a, b = map(int, input().split())\nprint(a - b)\n",
        "print(3)\n",  # right on the first test only
        "raise ValueError('boom')\n",
    ])
    self.assertEqual([i.reward for i in items], [1, 1, 1, 0, 0, 0])
    self.assertIn("test 1: wrong answer", items[4].result)
    self.assertIn("runtime error", items[5].result)

  def test_call_based(self):
    items = self.score([_CALL, _CALL, _LEETCODE, _LEETCODE], [
        "def swap(a, b):\n    return (b, a)\n",
        "def swap(a, b):\n    return [a, b]\n",
        "```python\nclass Solution:\n    def sq(self, x):\n        return x * x\n```",
        "class Solution:\n    def sq(self, x):\n        return x + x\n",
    ])
    self.assertEqual([i.reward for i in items], [1, 0, 1, 0])

  def test_float_tolerance(self):
    items = self.score([_FLOAT] * 2, ["print(1 / 3)", "print(0.3)"])
    self.assertEqual([i.reward for i in items], [1, 0])

  def test_timeout_per_test(self):
    items = self.score([_STDIO], ["while True:\n    pass\n"])
    self.assertEqual(items[0].reward, 0.0)
    self.assertIn("timed out", items[0].result)

  def test_cannot_read_expected_outputs(self):
    # The sandbox never receives outputs, so echoing "the answer" is impossible.
    items = self.score([_STDIO], [
        "import gc, json\n"
        "print([o for o in gc.get_objects() if isinstance(o, str) and "
        "o.strip() == '3'][:1])\n"])
    self.assertEqual(items[0].reward, 0.0)


if __name__ == "__main__":
  absltest.main()
