"""MATH-500 as restem_math's math500 split: ids, records, prompts, reward, errors, loop and CLI."""

import io
import json
import os
import tempfile

import gin
import seqio
from absl.testing import absltest

import restem_jax.tasks  # noqa: F401  (registers the tasks)
from restem_jax import configurables, transfer
from restem_jax.engine import partitioning
from restem_jax.engine.config import ModelConfig
from restem_jax.engine.engine import Engine
from restem_jax.restem import loop
from restem_jax.restem.evaluation import EvalConfig
from restem_jax.tasks import __main__ as show, base, math, prompts_math, readers

# Two MATH test problems in the tarball's layout, and two training problems.
TEST = {
    "precalculus/807": {
        "problem": "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  "
                   "Enter your answer in the form $(r,\\theta),$ where $r > 0$ and "
                   "$0 \\le \\theta < 2 \\pi.$",
        "level": "Level 2", "type": "Precalculus",
        "solution": "We have that $r = \\sqrt{0^2 + 3^2} = 3.$  Therefore, the polar coordinates "
                    "are $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$"},
    "counting_and_probability/12": {
        "problem": "How many ways are there to choose 2 of 5 books?",
        "level": "Level 1", "type": "Counting & Probability",
        "solution": "There are $\\binom{5}{2} = \\boxed{10}$ ways."},
}
TRAIN = {"algebra/1": {"problem": "What is $1+1$?", "level": "Level 1", "type": "Algebra",
                       "solution": "$1+1=\\boxed{2}$."},
         "algebra/2": {"problem": "What is $2+2$?", "level": "Level 1", "type": "Algebra",
                       "solution": "$2+2=\\boxed{4}$."}}
ANSWERS = {"precalculus/807": "\\left( 3, \\frac{\\pi}{2} \\right)",
           "counting_and_probability/12": "10"}
MODEL = ModelConfig(vocab_size=264, embed_dim=32, num_layers=1, num_heads=2, num_kv_heads=1,
                    head_dim=16, mlp_dim=64)
EVAL = EvalConfig(pass_k_samples=2, pass_ks=(1, 2), maj_ks=(2,), max_new_tokens=16)


def _line(pid, record, **changes):
  """The release's line for a MATH test problem (level an integer, subject, answer, unique_id)."""
  line = {"problem": record["problem"], "solution": record["solution"], "answer": ANSWERS[pid],
          "subject": record["type"], "level": int(record["level"].split()[-1]),
          "unique_id": f"test/{pid}.json"}
  line.update(changes)
  return line


class Math500Test(absltest.TestCase):

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.data_dir = tmp.name
    for split, problems in (("test", TEST), ("train", TRAIN)):
      for pid, record in problems.items():
        path = os.path.join(self.data_dir, "MATH", split, f"{pid}.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
          json.dump(record, f)
    # The release's order is its own (here reversed), not the tarball's.
    self._write([_line(pid, TEST[pid]) for pid in reversed(TEST)])

  def _write(self, lines):
    path = os.path.join(self.data_dir, readers.MATH500_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write("".join(json.dumps(line) + "\n" for line in lines))
    return path

  def test_ids_records_and_prompts_are_the_test_splits(self):
    spec = math.make_math_task(self.data_dir)
    self.assertEqual(spec.splits, ("train", "test", "labelled", "math500"))
    self.assertEqual(seqio.get_mixture_or_task("restem_math").splits, spec.splits)
    test = {p.id: p for p in base.load_problems("restem_math", "test")}
    math500 = base.load_problems("restem_math", "math500")  # Through seqio, as the loop.
    self.assertEqual([p.id for p in math500], ["counting_and_probability/12", "precalculus/807"])
    for p in math500:
      same = test[p.id]
      self.assertEqual(p.prompt, same.prompt)
      self.assertEqual(p.prompt, prompts_math.math_prompt(TEST[p.id]["problem"]))
      self.assertEqual(p.reference, same.reference)
      self.assertEqual({k: p.record[k] for k in same.record}, same.record)
      self.assertEqual(set(p.record) - set(same.record), {"answer", "unique_id"})
      self.assertEqual(p.record["unique_id"], f"test/{p.id}.json")

  def test_reference_answer_gets_reward_one(self):
    spec = math.make_math_task(self.data_dir)
    problems = base.load_problems("restem_math", "math500")
    records = [p.record for p in problems]
    final = [f"So it is.\n{prompts_math.math_final_line(r['answer'])}" for r in records]
    wrong = [f"So it is.\n{prompts_math.math_final_line('7')}" for _ in records]
    self.assertEqual(spec.score(records, final), [1.0, 1.0])
    self.assertEqual(spec.score(records, [p.reference for p in problems]), [1.0, 1.0])
    self.assertEqual(spec.score(records, wrong), [0.0, 0.0])
    self.assertEqual(spec.extract_answer(final[0]), spec.extract_answer(
        prompts_math.math_final_line("10")))

  def test_a_missing_file_is_named_when_the_split_is_read(self):
    os.remove(os.path.join(self.data_dir, readers.MATH500_PATH))
    spec = math.make_math_task(self.data_dir)
    self.assertEqual(spec.splits, ("train", "test", "labelled", "math500"))
    with self.assertRaisesRegex(readers.DatasetMissingError,
                                r"MATH-500 not found: .*MATH/math500/test\.jsonl"):
      base.load_problems("restem_math", "math500")

  def test_malformed_lines_name_file_and_line(self):
    first = _line("precalculus/807", TEST["precalculus/807"])
    good = _line("counting_and_probability/12", TEST["counting_and_probability/12"])
    cases = (
        (dict(good, answer="11"), r"test\.jsonl:2: problem counting_and_probability/12: "
                                  r"answer '11' is not the solution's last \\boxed\{\} \('10'\)"),
        (dict(good, unique_id="counting_and_probability/12"), "unique_id .* is not"),
        (dict(good, level="hard"), "level 'hard' is not a number"),
        ({k: v for k, v in good.items() if k != "answer"}, r"missing field\(s\) \['answer'\]"),
        (dict(good, solution="No box.", answer="10"), "boxed"),
        (first, "test.jsonl:2: unique_id 'test/precalculus/807.json' appears twice"),
    )
    for bad, pattern in cases:
      self._write([first, bad])
      with self.assertRaisesRegex(readers.MalformedRecordError, pattern):
        readers.read_math500(self.data_dir)
    self._write([first, dict(good, level="5")])  # A level given as a string.
    self.assertEqual(readers.read_math500(self.data_dir)[1][1]["level"], "Level 5")

  def test_loop_tests_on_the_split_a_gin_binding_names(self):
    spec = math.make_math_task(self.data_dir)
    self.addCleanup(gin.clear_config)
    gin.parse_config(["RestemConfig.test_split = 'math500'", "RestemConfig.val_size = 1"])
    config = configurables.build(loop.RestemConfig)
    splits = loop._splits(spec, config)  # pylint: disable=protected-access
    self.assertEqual([p.id for p in splits["test"]],
                     [p.id for p in base.load_problems("restem_math", "math500")])
    self.assertLen(splits["train"] + splits["validation"], 2)
    default = loop._splits(spec, loop.RestemConfig(val_size=1))  # pylint: disable=protected-access
    self.assertEqual([p.id for p in default["test"]],
                     ["counting_and_probability/12", "precalculus/807"])

  def test_transfer_evaluates_the_split(self):
    engine = Engine(MODEL, seqio.ByteVocabulary(), partitioning.make_mesh(),
                    max_prompt_len=2048, sample_batch=4)
    ckpt, work = os.path.join(self.data_dir, "ckpt"), os.path.join(self.data_dir, "work")
    engine.save(ckpt, engine.init_params(0))
    summary = transfer.evaluate_tasks(engine, ckpt, ["restem_math"], work, EVAL,
                                      data_dir=self.data_dir, split="math500")
    result = summary["restem_math"]
    self.assertEqual((result["split"], result["num_problems"]), ("math500", 2))
    self.assertEqual(set(result["pass@k"]), {"1", "2"})
    self.assertEqual(set(result["test_pass@1_by_level"]), {"Level 1", "Level 2"})

  def test_cli_shows_the_split(self):
    out = io.StringIO()
    self.assertEqual(show.describe("restem_math", self.data_dir, "math500", 1, out=out), 2)
    self.assertIn("counting_and_probability/12", out.getvalue())


if __name__ == "__main__":
  absltest.main()
