"""The four paper tasks: seqio registration, prompts, references rewarded 1, gin configs, CLI."""

import io
import json
import os
import shutil
import tempfile

import gin
import seqio
from absl.testing import absltest

import restem_jax.tasks  # noqa: F401  (registers the tasks)
from restem_jax.rewards.math_answers import last_boxed
from restem_jax.tasks import (__main__ as show, apps, base, benchmarks, prompts_code,
                              prompts_math)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
LAYOUTS = {"folders": os.path.join(FIXTURES, "folders"), "jsonl": os.path.join(FIXTURES, "jsonl")}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("restem_math", "restem_gsm8k", "restem_apps", "restem_humaneval")


def cut(text, stops):
  """What the generator keeps of a continuation: the text up to the first stop string."""
  return text[:min([text.find(s) for s in stops if s in text] or [len(text)])]


class BenchmarksTest(absltest.TestCase):

  def test_import_registers_seqio_tasks(self):
    for name in NAMES:
      self.assertIn(name, seqio.TaskRegistry.names())
      task = seqio.get_mixture_or_task(name)
      self.assertEqual(set(task.output_features), {"inputs", "targets"})
    self.assertEqual(seqio.get_mixture_or_task("restem_humaneval").splits, ("test",))
    self.assertEqual(seqio.get_mixture_or_task("restem_math").splits,
                     ("train", "test", "labelled", "math500"))

  def test_references_get_reward_one_and_prompts_end_where_the_model_continues(self):
    ends = {"restem_math": "\n\nSolution:\n", "restem_gsm8k": "\nA:",
            "restem_apps": "ANSWER:\n```python\n"}
    for layout, data_dir in LAYOUTS.items():
      specs = benchmarks.register_all(data_dir)
      for name in NAMES:  # The fixture trees hold these four; BBH has tests/test_bbh.py.
        spec = specs[name]
        for split in spec.splits:
          problems = base.load_problems(name, split)  # Through seqio, as the loop reads them.
          self.assertNotEmpty(problems, f"{layout} {name} {split}")
          with_ref = [p for p in problems if p.reference]
          self.assertEqual(len(with_ref), len(problems), f"{layout} {name} {split}")
          for p in problems:
            if name in ends:
              self.assertTrue(p.prompt.endswith(ends[name]), (name, p.prompt[-40:]))
            else:
              self.assertEqual(p.prompt, p.record["prompt"])
            # A reference continuation survives the stop-string cut intact: the stop
            # strings end a completion only where the model starts the next problem.
            self.assertEqual(cut(p.reference, spec.stop_strings), p.reference, (name, p.id))
            json.dumps(p.record)
          scores = spec.score([p.record for p in with_ref], [p.reference for p in with_ref])
          self.assertEqual(scores, [1.0] * len(with_ref), f"{layout} {name} {split}")
          # And a wrong answer is not rewarded (the fixtures' problems).
          if name != "restem_humaneval" or layout == "folders":
            wrong = ["    return None\n" if name == "restem_humaneval" else
                     "print(-12345)\nThe answer is -12345." for p in with_ref]
            self.assertEqual(spec.score([p.record for p in with_ref], wrong),
                             [0.0] * len(with_ref), f"{layout} {name} {split}")

  def test_real_humaneval_canonical_solutions_pass(self):
    spec = benchmarks.make_task("restem_humaneval", data_dir=None)
    problems = base.load_problems("restem_humaneval", "test")
    self.assertLen(problems, 164)
    self.assertEqual(spec.score([p.record for p in problems], [p.reference for p in problems]),
                     [1.0] * 164)

  def test_apps_splits_filter_difficulty_and_pick_prompt_variant(self):
    benchmarks.register_all(LAYOUTS["folders"])
    train = base.load_problems("restem_apps", "train")
    self.assertEqual([p.id for p in train], ["0000", "0001"])  # 0002 is "interview".
    stdin, call = train
    self.assertIn(prompts_code.FORMAT_STDIN, stdin.prompt)
    self.assertNotIn(prompts_code.FORMAT_CALL, stdin.prompt)
    self.assertIn(prompts_code.FORMAT_CALL, call.prompt)
    self.assertIn("def largest(arr):\nUse Call-Based format", call.prompt)
    spec = apps.make_apps_task(data_dir=LAYOUTS["folders"],
                               difficulties=("introductory", "interview"), num_shots=1)
    self.assertLen(spec.load_split("train"), 3)
    self.assertEqual(spec.load_split("train")[0].prompt.count("QUESTION:"), 2)

  def test_exemplars_are_correct(self):
    math_spec = benchmarks.make_task("restem_math", LAYOUTS["folders"])
    records = [{"problem": p, "solution": f"\\boxed{{{a}}}", "level": "", "type": ""}
               for p, _, a in prompts_math.MATH_EXEMPLARS]
    completions = [s + "\n" + prompts_math.math_final_line(a)
                   for _, s, a in prompts_math.MATH_EXEMPLARS]
    self.assertEqual(math_spec.score(records, completions), [1.0] * 4)
    self.assertEqual(prompts_math.math_prompt("x").count("I hope it is correct."), 4)
    gsm = benchmarks.make_task("restem_gsm8k", LAYOUTS["folders"])
    records = [{"question": q, "answer": f"#### {n}"} for q, _, n in prompts_math.GSM8K_EXEMPLARS]
    self.assertEqual(gsm.score(records, [a for _, a, _ in prompts_math.GSM8K_EXEMPLARS]),
                     [1.0] * 8)
    self.assertEqual(prompts_math.gsm8k_prompt("x").count("The answer is"), 8)
    apps_spec = benchmarks.make_task("restem_apps", LAYOUTS["folders"])
    exemplars = prompts_code.APPS_STDIN_EXEMPLARS + prompts_code.APPS_CALL_EXEMPLARS
    records = [{"problem_id": str(i), "question": q, "starter_code": s,
                "input_output": json.dumps(io_)} for i, (q, s, _, io_) in enumerate(exemplars)]
    self.assertEqual(apps_spec.score(records, [c for _, _, c, _ in exemplars]), [1.0] * 4)

  def test_math_reference_and_gsm8k_reference_format(self):
    ref = prompts_math.math_reference("So $x = \\boxed{\\frac{1}{2}}$.")
    self.assertEqual(ref, "So $x = \\boxed{\\frac{1}{2}}$.\nFinal Answer: The final answer is "
                     "$\\frac{1}{2}$. I hope it is correct.")
    self.assertIsNone(prompts_math.math_reference("no boxed answer"))
    self.assertEqual(last_boxed(ref), "\\frac{1}{2}")
    self.assertEqual(prompts_math.gsm8k_reference("He has 2 + 3 = <<2+3=5>>5.\n#### 5"),
                     " He has 2 + 3 = 5. The answer is 5.")

  def test_train_subsets(self):
    full = [p.id for p in benchmarks.make_task("restem_math", LAYOUTS["folders"])
            .load_split("train")]
    two = [p.id for p in benchmarks.FACTORIES["restem_math"](
        data_dir=LAYOUTS["folders"], max_train=2).load_split("train")]
    three = [p.id for p in benchmarks.FACTORIES["restem_math"](
        data_dir=LAYOUTS["folders"], max_train=3).load_split("train")]
    self.assertLen(two, 2)
    self.assertContainsSubset(two, three)  # Nested subsets, in dataset order.
    self.assertEqual(two, [i for i in full if i in two])
    tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, tmp)
    ids_file = os.path.join(tmp, "bin_0.txt")
    with open(ids_file, "w") as f:
      f.write("# bin 0\nalgebra/2\nnumber_theory/5\n")
    spec = benchmarks.FACTORIES["restem_math"](data_dir=LAYOUTS["folders"],
                                               train_ids_file=ids_file)
    self.assertEqual([p.id for p in spec.load_split("train")], ["algebra/2", "number_theory/5"])
    self.assertEqual([p.id for p in spec.load_split("labelled")],
                     ["algebra/2", "number_theory/5"])
    self.assertLen(spec.load_split("test"), 2)  # Test is never subset.
    bad = os.path.join(tmp, "bad.txt")
    with open(bad, "w") as f:
      f.write("algebra/99\n")
    with self.assertRaisesRegex(ValueError, "not in the train split"):
      benchmarks.FACTORIES["restem_math"](data_dir=LAYOUTS["folders"],
                                          train_ids_file=bad).load_split("train")

  def test_show_cli(self):
    out = io.StringIO()
    n = show.describe("restem_gsm8k", LAYOUTS["jsonl"], "test", 1, out=out)
    text = out.getvalue()
    self.assertEqual(n, 2)
    self.assertIn("restem_gsm8k [test]: 2 examples", text)
    self.assertIn("Q: A box holds 6 eggs. How many eggs are in 9 boxes?\nA:\u2038", text)
    self.assertIn("The answer is 54.", text)
    self.assertNotIn("Half of 30", text)  # Only the first example is shown.


class GinConfigsTest(absltest.TestCase):

  def tearDown(self):
    gin.clear_config()
    super().tearDown()

  def _parse(self, *files, bindings=()):
    from restem_jax import configurables  # noqa: F401  pylint: disable=import-outside-toplevel
    gin.clear_config()
    gin.add_config_file_search_path(ROOT)
    gin.parse_config_files_and_bindings(
        [os.path.join(ROOT, "gin_configs", f) for f in files],
        [f"DATA_DIR = '{LAYOUTS['folders']}'", *bindings])

  def test_paper_settings(self):
    from restem_jax.configurables import build  # pylint: disable=import-outside-toplevel
    from restem_jax.restem.evaluation import EvalConfig  # pylint: disable=import-outside-toplevel
    from restem_jax.restem.loop import RestemConfig  # pylint: disable=import-outside-toplevel
    for files, task, settings in (
        (("math.gin",), "restem_math", dict(iterations=3, num_samples=32)),
        (("apps.gin",), "restem_apps", dict(iterations=2, num_samples=64))):
      self._parse("models/smollm2_135m.gin", *files)
      restem, evaluation = build(RestemConfig), build(EvalConfig)
      for key, value in settings.items():
        self.assertEqual(getattr(restem, key), value)
      self.assertEqual((restem.temperature, restem.top_k, restem.max_per_problem),
                       (0.7, 40, 10))
      self.assertEqual((evaluation.pass_temperature, evaluation.pass_top_p), (1.0, 0.95))
      spec = gin.query_parameter("run.task").scoped_configurable_fn()
      self.assertEqual(spec.name, task)
      self.assertNotEmpty(base.load_problems(task, "train"))
    self._parse("models/smollm2_135m.gin", "math.gin")
    self.assertEqual(build(EvalConfig).maj_ks, (64,))

  def test_single_chip_configs_keep_the_papers_run_and_its_batch(self):
    from restem_jax.configurables import build  # pylint: disable=import-outside-toplevel
    from restem_jax.engine.config import ModelConfig  # pylint: disable=import-outside-toplevel
    from restem_jax.restem.finetune import FinetuneConfig  # pylint: disable=import-outside-toplevel
    from restem_jax.restem.loop import RestemConfig  # pylint: disable=import-outside-toplevel
    self._parse("math.gin")
    paper, paper_tune = build(RestemConfig), build(FinetuneConfig)
    for name, embed_dim, steps in (("colab_v5e.gin", 896, 8), ("colab_v6e.gin", 2048, 4)):
      with self.subTest(name):
        self._parse(name)
        tune = build(FinetuneConfig)
        self.assertEqual(build(ModelConfig).embed_dim, embed_dim)
        self.assertEqual((tune.batch_size, tune.seq_len, tune.max_steps),
                         (paper_tune.batch_size, paper_tune.seq_len, paper_tune.max_steps))
        self.assertEqual(tune.grad_accum_steps, steps)
        restem = build(RestemConfig)
        self.assertEqual((restem.iterations, restem.num_samples, restem.max_per_problem),
                         (paper.iterations, paper.num_samples, paper.max_per_problem))
        spec = gin.query_parameter("run.task").scoped_configurable_fn()
        self.assertEqual(spec.name, "restem_math")

  def test_ablations_parse_on_top(self):
    from restem_jax.configurables import build  # pylint: disable=import-outside-toplevel
    from restem_jax.restem.loop import RestemConfig  # pylint: disable=import-outside-toplevel
    ablations = sorted(os.listdir(os.path.join(ROOT, "gin_configs", "ablations")))
    self.assertContainsSubset(["more_samples.gin", "num_questions.gin", "human_sft.gin",
                               "continue_from_iterate.gin", "difficulty_bin.gin",
                               "distillation.gin"], ablations)
    for name in ablations:
      self._parse("models/smollm2_135m.gin", "math.gin", f"ablations/{name}")
      build(RestemConfig)
    self._parse("models/smollm2_135m.gin", "math.gin", "ablations/more_samples.gin")
    self.assertEqual((build(RestemConfig).iterations, build(RestemConfig).num_samples), (1, 96))
    self._parse("models/smollm2_135m.gin", "math.gin", "ablations/num_questions.gin",
                bindings=["NUM_QUESTIONS = 3"])
    spec = gin.query_parameter("run.task").scoped_configurable_fn()
    self.assertLen(spec.load_split("train"), 3)
    self._parse("models/smollm2_135m.gin", "apps.gin", "ablations/human_sft.gin")
    self.assertEqual((build(RestemConfig).iterations, build(RestemConfig).sft_control), (0, True))


if __name__ == "__main__":
  absltest.main()
