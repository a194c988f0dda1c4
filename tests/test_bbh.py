"""BIG-Bench Hard: prompts and reward checked against the authors' recorded Codex outputs.

The real checks unpack the BIG-Bench-Hard repository (shared/data, MIT) into a
temporary directory and compare with code-davinci-002-outputs/: the prompts
the authors sent, and the accuracy they computed from the predictions.
"""

import json
import os
import statistics
import tarfile
import tempfile

import numpy as np
import seqio
from absl.testing import absltest

import restem_jax.tasks  # noqa: F401  (registers the tasks)
from restem_jax import rewards, transfer
from restem_jax.engine import partitioning
from restem_jax.engine.config import ModelConfig
from restem_jax.engine.engine import Engine
from restem_jax.engine.sampler import SamplingConfig
from restem_jax.restem import metrics
from restem_jax.restem.evaluation import EvalConfig
from restem_jax.rewards import bbh as bbh_reward
from restem_jax.tasks import base, bbh, benchmarks, readers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARBALL = "BIG-Bench-Hard-9ee07bd.tar.gz"
TARBALLS = [os.path.join(ROOT, "..", "shared", "data", TARBALL),
            os.path.join(ROOT, "shared", "data", TARBALL)]
OUTPUTS = "code-davinci-002-outputs/code-davinci-002-{mode}/{subtask}_few_shot_template_0-255000"
MODES = {"restem_bbh_cot": "cot", "restem_bbh": "direct"}
# Two typos in the recorded direct prompts' exemplars, not in cot-prompts/ nor the recorded
# CoT prompts: a date option (its reasoning says 01/03/1963) and a garbled word.
DIRECT_TYPOS = {
    "date_understanding": ("(A) 01/11/1961\n(B) 01/03/1961\n", "(A) 01/11/1961\n(B) 01/03/1963\n"),
    "tracking_shuffled_objects_three_objects": ("end of thehg sy dance", "end of the dance"),
}


def _tarball():
  return next((p for p in TARBALLS if os.path.isfile(p)), None)


def _recorded(root, mode, subtask):
  path = os.path.join(root, OUTPUTS.format(mode=mode, subtask=subtask))
  with open(path + ".json", encoding="utf-8") as f:
    outputs = json.load(f)["outputs"]
  with open(path + "_eval_metrics.jsonl", encoding="utf-8") as f:
    accuracy = json.loads(f.readline())["accuracy"]
  return outputs, accuracy


@absltest.skipIf(_tarball() is None, f"{TARBALL} not found in {TARBALLS}")
class RecordedOutputsTest(absltest.TestCase):
  """The prompts and accuracies of the BBH authors' code-davinci-002 run."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.data_dir = cls.tmp.name
    cls.root = os.path.join(cls.data_dir, bbh.ROOT)  # The tarball has no top-level folder.
    with tarfile.open(_tarball()) as tar:
      tar.extractall(cls.root, filter="data")
    cls.problems = {}
    for name in MODES:
      benchmarks.make_task(name, cls.data_dir)
      cls.problems[name] = base.load_problems(name, "test")  # Through seqio, as the loop.

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def _pairs(self, name):
    """(problem, recorded output) per example, by subtask, checking ids and targets agree."""
    by_subtask = {}
    for p in self.problems[name]:
      by_subtask.setdefault(p.record["subtask"], []).append(p)
    self.assertEqual(sorted(by_subtask), list(bbh.SUBTASKS))
    out = {}
    for subtask, problems in by_subtask.items():
      outputs, accuracy = _recorded(self.root, MODES[name], subtask)
      self.assertEqual([p.id for p in problems],
                       [f"{subtask}/{i}" for i in range(len(outputs))])
      self.assertEqual([p.record["target"] for p in problems], [o["target"] for o in outputs])
      out[subtask] = (list(zip(problems, outputs)), accuracy)
    return out

  def test_every_example_is_a_test_problem(self):
    for name, mode in MODES.items():
      problems = self.problems[name]
      self.assertLen(problems, 6511)
      self.assertEqual(seqio.get_mixture_or_task(name).splits, ("test",))
      p = problems[0]
      self.assertEqual(p.record, {"input": "not ( True ) and ( True ) is", "target": "False",
                                  "subtask": "boolean_expressions", "mode": mode})

  def test_cot_prompts_are_the_recorded_ones(self):
    pairs = self._pairs("restem_bbh_cot")
    same = {s: sum(p.prompt == o["input"] for p, o in items) for s, (items, _) in pairs.items()}
    total = sum(same.values())
    print(f"\nCoT prompts identical to the recorded ones: {total}/6511")
    self.assertGreaterEqual(total / 6511, 0.999)
    for subtask, (items, _) in pairs.items():
      self.assertGreaterEqual(same[subtask] / len(items), 0.99, subtask)

  def test_direct_prompts_are_the_recorded_ones(self):
    pairs = self._pairs("restem_bbh")
    exact = corrected = 0
    for subtask, (items, _) in pairs.items():
      for p, o in items:
        recorded = o["input"]
        exact += p.prompt == recorded
        if subtask in DIRECT_TYPOS:
          typo, fix = DIRECT_TYPOS[subtask]
          self.assertEqual(recorded.count(typo), 1, p.id)  # In the exemplars, every prompt.
          self.assertLess(recorded.index(typo), recorded.rindex("\n\nQ: "), p.id)
          recorded = recorded.replace(typo, fix)
        corrected += p.prompt == recorded
    print(f"\nDirect prompts identical to the recorded ones: {exact}/6511; "
          f"{corrected}/6511 with the recorded exemplars' two typos corrected")
    typo_examples = sum(len(pairs[s][0]) for s in DIRECT_TYPOS)
    self.assertGreaterEqual(exact / (6511 - typo_examples), 0.999)
    self.assertGreaterEqual(corrected / 6511, 0.999)

  def test_reward_gives_the_published_accuracy(self):
    deviations = {}
    for name, mode in MODES.items():
      for subtask, (items, published) in self._pairs(name).items():
        records = [p.record for p, _ in items]
        predictions = [o["prediction"] for _, o in items]
        ours = 100 * np.mean(rewards.score_batch("bbh", records, predictions, progress=False))
        deviations[subtask, mode] = ours - published
        # A record without its mode reads it off the completion, to the same result.
        modeless = [{k: v for k, v in r.items() if k != "mode"} for r in records]
        self.assertEqual(rewards.score_batch("bbh", modeless, predictions, progress=False),
                         [bbh_reward.score_bbh(r, c)[0] for r, c in zip(records, predictions)])
    self.assertLen(deviations, 54)
    worst = max(deviations, key=lambda k: abs(deviations[k]))
    print(f"\nBBH accuracy - published, 54 (subtask, mode) pairs: largest |difference| "
          f"{abs(deviations[worst]):.2g} points ({worst})")
    for pair, deviation in deviations.items():
      self.assertLessEqual(abs(deviation), 0.5, pair)


def _write_tree(data_dir, examples, description="Answer the question."):
  """A BBH tree of all subtasks: the same 2-shot CoT prompt, `examples` per subtask."""
  for folder in ("bbh", "cot-prompts"):
    os.makedirs(os.path.join(data_dir, bbh.ROOT, folder), exist_ok=True)
  prompt = ("CANARY\n-----\n" + description + "\n\n"
            "Q: Is 2 even?\nA: Let's think step by step.\n2 = 2 * 1. So the answer is Yes.\n\n"
            "Q: Which is largest?\nOptions:\n(A) 1\n(B) 3\nA: Let's think step by step.\n"
            "3 > 1. So the answer is (B).")
  for subtask in bbh.SUBTASKS:
    with open(os.path.join(data_dir, bbh.ROOT, "cot-prompts", f"{subtask}.txt"), "w") as f:
      f.write(prompt)
    with open(os.path.join(data_dir, bbh.ROOT, "bbh", f"{subtask}.json"), "w") as f:
      json.dump({"canary": "CANARY", "examples": examples(subtask)}, f)


class TasksTest(absltest.TestCase):
  """Prompts, records and errors on a small made-up tree in the repository's layout."""

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.data_dir = tmp.name

  def test_registered_at_import(self):
    for name in MODES:
      self.assertIn(name, seqio.TaskRegistry.names())
      self.assertIn(name, benchmarks.FACTORIES)

  def test_prompts_records_and_references(self):
    _write_tree(self.data_dir, lambda s: [{"input": f"{s} one?", "target": "No"},
                                          {"input": f"{s} two?", "target": "(A)"}],
                description="Answer the question.\n\nA second paragraph, for CoT only.")
    cot = bbh.make_bbh_cot_task(self.data_dir, subtasks=["navigate", "snarks"])
    direct = bbh.make_bbh_task(self.data_dir, subtasks=["navigate", "snarks"])
    cot_problems = base.load_problems(cot.name, "test")
    direct_problems = base.load_problems(direct.name, "test")
    self.assertEqual([p.id for p in cot_problems],
                     ["navigate/0", "navigate/1", "snarks/0", "snarks/1"])
    self.assertEqual(cot_problems[3].record, {"input": "snarks two?", "target": "(A)",
                                              "subtask": "snarks", "mode": "cot"})
    self.assertTrue(cot_problems[0].prompt.startswith("Answer the question.\n\nA second"))
    self.assertTrue(cot_problems[0].prompt.endswith(
        "So the answer is (B).\n\nQ: navigate one?\nA: Let's think step by step."))
    self.assertIsNone(cot_problems[0].reference)
    self.assertEqual(direct_problems[0].prompt,
                     "Answer the question.\n\nQ: Is 2 even?\nA: Yes\n\n"
                     "Q: Which is largest?\nOptions:\n(A) 1\n(B) 3\nA: (B)\n\n"
                     "Q: navigate one?\nA:")
    self.assertEqual(direct.score([p.record for p in direct_problems],
                                  [p.reference for p in direct_problems]), [1.0] * 4)
    self.assertEqual(cot.score([p.record for p in cot_problems],
                               ["\nSo the answer is No.", "\nSo the answer is (B).\n\nQ: x",
                                "\n(A) and (B) fit. So the answer is (A).", "\nI give up."]),
                     [1.0, 0.0, 0.0, 0.0])
    self.assertEqual(cot.extract_answer("\nSo the answer is B."), "(B)")
    self.assertIsNone(cot.extract_answer(" B"))  # A CoT completion states its answer.
    self.assertEqual(direct.extract_answer(" B\nQ: more"), "(B)")

  def test_errors_name_the_file(self):
    with self.assertRaisesRegex(readers.DatasetMissingError, "BIG-Bench-Hard"):
      bbh.bbh_problems(self.data_dir, "cot", bbh.SUBTASKS)
    _write_tree(self.data_dir, lambda s: [{"input": "q", "target": ""}])
    with self.assertRaisesRegex(readers.MalformedRecordError,
                                r"boolean_expressions\.json: example 0: .*empty 'target'"):
      bbh.bbh_problems(self.data_dir, "direct", bbh.SUBTASKS)
    _write_tree(self.data_dir, lambda s: [{"input": "q"}])
    with self.assertRaisesRegex(readers.MalformedRecordError, "missing field"):
      bbh.bbh_problems(self.data_dir, "cot", ["navigate"])
    with open(os.path.join(self.data_dir, bbh.ROOT, "cot-prompts", "navigate.txt"), "w") as f:
      f.write("no separator\nQ: q\nA: Let's think step by step. So the answer is No.")
    with self.assertRaisesRegex(readers.MalformedRecordError, "navigate.txt: no '-----'"):
      bbh.read_cot_prompt(self.data_dir, "navigate")
    with self.assertRaisesRegex(readers.MalformedRecordError, "exemplar 0"):
      bbh.direct_prompt("Desc.\n\nQ: q\nA: Let's think step by step.\nNo idea.", "x.txt")
    for subtasks in (["navigate", "nope"], [], ["navigate", "navigate"]):
      with self.assertRaises(ValueError):
        bbh.make_bbh_task(self.data_dir, subtasks=subtasks, name="bbh_bad")

  def test_subtask_metrics_is_the_mean_of_subtask_means(self):
    result = metrics.subtask_metrics(["b", "a", "b", "b"], [1.0, 0.0, 1.0, 0.0])
    self.assertEqual(result, {"subtask_accuracy": {"a": 0.0, "b": 2 / 3},
                               "macro_accuracy": 1 / 3})
    with self.assertRaises(ValueError):
      metrics.subtask_metrics(["a"], [])


class AnswerTest(absltest.TestCase):
  """Answer extraction and matching, as rewards.extract_answer / score_batch("bbh") see them."""

  def test_chain_of_thought(self):
    cases = {
        "\nA = True. So the answer is False.": "False",
        "\nSo the answer is (A).": "(A)",
        " the answer is -219.": "-219",
        " So the answer is 3.5.": "3.5",
        "\nSo the answer is arson aspect census.": "arson aspect census",
        "\nThe answer is: Yes.": "Yes",
        "\nthe answer is (B), I think.\nNo, the answer is (C).": "(C)",  # The last one.
        "\nSo the answer is (A).\n\nQ: next\nA: So the answer is (B).": "(A)",  # Cut there.
        "\nSo the answer is (A).\nQ: next\nA: So the answer is (B).": "(A)",
        "\nSo the answer is ] } ].": "] } ]",
        "\nSo the answer is (A) Lola.": "(A)",
        "\nSo the answer is A.": "(A)",
        "\nSo the answer is (A) or (B).": "(A) or (B)",  # Not an option: wrong for either.
        "\nSo the answer is (None of the above).": "(None of the above)",
    }
    for completion, answer in cases.items():
      self.assertEqual(bbh_reward.extract_answer(completion, "cot"), answer, completion)
      self.assertEqual(rewards.extract_answer("bbh", completion), answer, completion)
    for no_answer in ("\nLet me see: 2 + 2 = 4", "\nSo the answer is .", ""):
      self.assertIsNone(bbh_reward.extract_answer(no_answer, "cot"), no_answer)

  def test_direct(self):
    cases = {" (A)": "(A)", " False\n\nQ: x\nA: True": "False", " yes.\nQ: x": "yes",
             " valid\nbecause": "valid", " ] )": "] )", " B)": "(B)", " 12": "12"}
    for completion, answer in cases.items():
      self.assertEqual(bbh_reward.extract_answer(completion, "direct"), answer, completion)
      self.assertEqual(rewards.extract_answer("bbh", completion), answer, completion)
    for no_answer in ("", " \n", " ."):
      self.assertIsNone(bbh_reward.extract_answer(no_answer, "direct"), no_answer)
    with self.assertRaisesRegex(ValueError, "mode"):
      bbh_reward.extract_answer("x", "fewshot")

  def test_exact_match(self):
    record = {"input": "q", "subtask": "sports_understanding", "target": "yes"}
    completions = [" yes", " yes.", " Yes", " no", "\nSo the answer is yes.", "\nSo yes."]
    self.assertEqual(rewards.score_batch("bbh", [record] * 6, completions, progress=False),
                     [1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    cot = dict(record, mode="cot")  # A CoT record wants "the answer is", not a first line.
    self.assertEqual(rewards.score_batch("bbh", [cot] * 2, [" yes", "\nSo the answer is yes."],
                                         progress=False), [0.0, 1.0])
    self.assertEqual(rewards.get_reward("bbh")({"target": "(C)"}, " C"), 1.0)

  def test_records_that_cannot_be_scored(self):
    rewards.check_record("bbh", {"input": "q", "target": "(A)", "subtask": "s", "mode": "direct"})
    for bad, reason in (({"input": "q"}, "target"), ({"target": " "}, "empty"),
                        ({"target": "x", "mode": "fewshot"}, "mode"),
                        ({"target": "x", "input": 3}, "input")):
      with self.assertRaisesRegex(ValueError, reason):
        rewards.check_record("bbh", bad)
    with self.assertRaises(rewards.RewardInputError):
      rewards.score_batch("bbh", [{"input": "q"}], ["x"], progress=False)


MODEL = ModelConfig(vocab_size=264, embed_dim=32, num_layers=1, num_heads=2, num_kv_heads=1,
                    head_dim=16, mlp_dim=64)
EVAL = EvalConfig(pass_k_samples=2, pass_ks=(1, 2), maj_ks=(2,), max_new_tokens=16)


class TransferTest(absltest.TestCase):

  def test_metrics_have_accuracy_per_subtask_and_macro(self):
    engine = Engine(MODEL, seqio.ByteVocabulary(), partitioning.make_mesh(),
                    max_prompt_len=1024, sample_batch=8)
    params = engine.init_params(0)
    work = tempfile.TemporaryDirectory()
    self.addCleanup(work.cleanup)
    tmp = work.name
    ckpt, data_dir = os.path.join(tmp, "ckpt"), os.path.join(tmp, "data")
    engine.save(ckpt, params)
    # Targets: what the model answers greedily for the first example of half the subtasks,
    # so the accuracies are neither all 0 nor all 1.
    _write_tree(data_dir, lambda s: [{"input": f"{s} {i}?", "target": "#"} for i in range(2)])
    problems = bbh.bbh_problems(data_dir, "direct", bbh.SUBTASKS)
    greedy = engine.generate(params, [p.prompt for p in problems],
                             SamplingConfig(temperature=0.0, max_new_tokens=EVAL.max_new_tokens),
                             EVAL.seed, range(len(problems)), bbh_reward.STOP_STRINGS)
    expected = {}
    for i, subtask in enumerate(bbh.SUBTASKS):
      answer = bbh_reward.extract_answer(greedy[2 * i][0].text, "direct")
      right = i % 2 == 0 and answer is not None and answer != "#"
      expected[subtask] = 0.5 if right else 0.0
      if right:
        with open(os.path.join(data_dir, bbh.ROOT, "bbh", f"{subtask}.json"), "w") as f:
          json.dump({"examples": [{"input": f"{subtask} 0?", "target": answer},
                                  {"input": f"{subtask} 1?", "target": "#"}]}, f)
    self.assertGreater(sum(v > 0 for v in expected.values()), 5)

    summary = transfer.evaluate_tasks(engine, ckpt, ["restem_bbh"], os.path.join(tmp, "work"),
                                      EVAL, data_dir=data_dir)
    result = summary["restem_bbh"]
    self.assertEqual(result["subtask_accuracy"], expected)
    self.assertAlmostEqual(result["macro_accuracy"], statistics.fmean(expected.values()))
    self.assertAlmostEqual(result["test_pass@1"], statistics.fmean(expected.values()))
    with open(os.path.join(tmp, "work", "restem_bbh", "metrics.json")) as f:
      self.assertEqual(json.load(f), result)


if __name__ == "__main__":
  absltest.main()
