"""MATH / GSM8K answer extraction and equivalence."""

import json
import os
import time

from absl.testing import absltest

from restem_jax import rewards
from restem_jax.rewards import math_answers as m
from restem_jax.rewards.scoring import TaskOptions

_PAIRS = os.path.join(os.path.dirname(m.__file__), "data", "answer_pairs.jsonl")


class ExtractionTest(absltest.TestCase):

  def test_minerva_format(self):
    text = ("We get 3. Final Answer: The final answer is $\\frac{1}{2}$. "
            "I hope it is correct.")
    self.assertEqual(m.math_prediction(text), "$\\frac{1}{2}$")

  def test_minerva_last_of_several(self):
    text = ("Final Answer: The final answer is 1. I hope it is correct.\n"
            "Final Answer: The final answer is 2. I hope it is correct.")
    self.assertEqual(m.minerva_answer(text), "2")

  def test_minerva_truncated_sentence(self):
    self.assertEqual(m.minerva_answer("Final Answer: The final answer is 7"), "7")

  def test_last_boxed_nested(self):
    text = "x \\boxed{1} then \\boxed{\\frac{1}{\\sqrt{2}}} end"
    self.assertEqual(m.last_boxed(text), "\\frac{1}{\\sqrt{2}}")
    self.assertEqual(m.last_boxed("\\boxed 5$"), "5")
    self.assertIsNone(m.last_boxed("\\boxed{unclosed"))
    self.assertIsNone(m.last_boxed("no box"))

  def test_math_gold_is_last_boxed_of_solution(self):
    problem = {"problem": "?", "solution": "First \\boxed{2}, so \\boxed{\\{1,2\\}}.",
               "level": "Level 1", "type": "Algebra"}
    self.assertEqual(m.math_gold(problem), "\\{1,2\\}")
    with self.assertRaisesRegex(ValueError, "boxed"):
      m.math_gold({"solution": "no answer"})

  def test_boxed_completion_without_minerva_line(self):
    self.assertEqual(m.math_prediction("so \\boxed{x^{2}}."), "x^{2}")

  def test_gsm8k(self):
    self.assertEqual(m.gsm8k_gold({"answer": "3+4=7\n#### 1,007"}), "1007")
    self.assertEqual(m.gsm8k_prediction("blah\n#### 18"), "18")
    self.assertEqual(m.gsm8k_prediction("So she pays $18.00. The answer is 18."), "18")
    self.assertEqual(m.gsm8k_prediction("Final Answer: The final answer is "
                                        "$-2.50$. I hope it is correct."), "-2.5")
    self.assertEqual(m.gsm8k_prediction("3 then 4 then 5"), "5")
    self.assertIsNone(m.gsm8k_prediction("no digits"))

  def test_normalization(self):
    self.assertEqual(m.normalize_final_answer("x = 5\\text{ cm}"), "5")
    self.assertEqual(m.normalize_final_answer("1,000"), "1000")
    self.assertEqual(m.normalize_final_answer("\\frac12"), "\\frac{1}{2}")
    self.assertEqual(m.normalize_final_answer("90^\\circ"), "90")

  def test_extract_answer_groups_equal_answers(self):
    a = rewards.extract_answer("math", "Final Answer: The final answer is "
                               "$\\frac12$. I hope it is correct.")
    b = rewards.extract_answer("math", "so \\boxed{\\frac{1}{2}}")
    self.assertEqual(a, b)
    self.assertEqual(rewards.extract_answer("gsm8k", "#### 1,000"),
                     rewards.extract_answer("gsm8k", "The answer is 1000.00."))
    self.assertIsNone(rewards.extract_answer("math", "no answer"))
    with self.assertRaisesRegex(ValueError, "humaneval"):
      rewards.extract_answer("humaneval", "x")

  def test_extraction_of_long_adversarial_completions(self):
    # These took minutes (cubic regex backtracking, quadratic normalisation)
    # in the loop's own process, where nothing bounds them.
    spaces = "Final Answer: The final answer is" + " " * 80_000 + "x. I hope it is correct."
    self.assertEqual(rewards.extract_answer("math", spaces), "x")
    self.assertEqual(m.minerva_answer(spaces), "x")
    self.assertIsNone(rewards.extract_answer("math", "\\boxed{" + "$a" * 40_000 + "}"))
    huge = "\\boxed{" + "x+" * 500_000 + "1}"
    self.assertEqual(m.score_math({"solution": "\\boxed{1}"}, huge),
                     (0.0, "failed: an answer of 1000001 characters"))
    self.assertEqual(rewards.extract_answer("math", "Final Answer: The final answer is 2 " * 4000
                                            + "\\boxed{5}"), "5")


class EquivalenceTest(absltest.TestCase):

  def test_examples(self):
    self.assertTrue(m.math_equiv("\\frac{1}{2}", "0.5"))
    self.assertTrue(m.math_equiv("2\\sqrt{2}", "\\sqrt{8}"))
    self.assertTrue(m.math_equiv("(1,2]", "(1, 2]"))
    self.assertFalse(m.math_equiv("(1,2]", "(1,2)"))
    self.assertFalse(m.math_equiv("(1,2)", "(2,1)"))
    self.assertFalse(m.math_equiv("3", None))
    self.assertFalse(m.math_equiv("3", "  "))

  def test_labelled_pairs_agreement(self):
    with open(_PAIRS) as f:
      rows = [json.loads(line) for line in f]
    self.assertGreaterEqual(len({r["category"] for r in rows}), 15)
    wrong = [(r["gold"], r["pred"]) for r in rows
             if m.math_equiv(r["gold"], r["pred"]) != r["equivalent"]]
    false_pos = [(r["gold"], r["pred"]) for r in rows
                 if not r["equivalent"] and m.math_equiv(r["gold"], r["pred"])]
    self.assertEqual(false_pos, [])
    self.assertLessEqual(len(wrong), len(rows) // 20, wrong)


class PoolTimeoutTest(absltest.TestCase):

  def test_hung_check_is_killed_and_pool_survives(self):
    with rewards.RewardPool(1, options=TaskOptions(math_timeout=0.5)) as pool:
      start = time.monotonic()
      # Nothing in this integral is large, so the guard lets it through, and
      # simplify works on it until math-verify's 1 s alarm: past the pool's 0.5 s.
      slow = {"solution": "\\boxed{1}"}
      integral = "\\int_{0}^{1} \\frac{\\sin(x^{5})}{x+\\cos(x)} dx"
      items = pool.submit("math", [slow, {"solution": "\\boxed{4}"}],
                          [f"\\boxed{{{integral}}}", "\\boxed{4}"],
                          progress=False).result()
      self.assertLess(time.monotonic() - start, 30)
    self.assertEqual(items[0].reward, 0.0)
    self.assertIn("timed out", items[0].result)
    self.assertEqual(items[1].reward, 1.0)

  def test_rewards_through_public_api(self):
    reward = rewards.get_reward("math")
    problem = {"problem": "?", "solution": "\\boxed{\\frac{3}{4}}",
               "level": "Level 2", "type": "Algebra"}
    self.assertEqual(reward(problem, "Final Answer: The final answer is "
                            "$0.75$. I hope it is correct."), 1.0)
    self.assertEqual(reward(problem, "\\boxed{\\frac{4}{3}}"), 0.0)
    scores = rewards.score_batch(
        "gsm8k", [{"question": "?", "answer": "#### 12"}] * 3,
        ["The answer is 12.", "#### 13", "nothing"], progress=False)
    self.assertEqual(scores, [1.0, 0.0, 0.0])


if __name__ == "__main__":
  absltest.main()
