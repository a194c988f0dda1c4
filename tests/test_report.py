"""restem_jax.report on real micro runs: every figure, every number, partial runs, bad paths."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import gin
from absl.testing import absltest

from restem_jax import configurables, report, transfer
from restem_jax.restem import runs as runs_lib
from restem_jax.tasks import difficulty
from tests import micro_task
from tests import test_loop  # The module, not its names: pytest would collect LoopTest here.

FIGURES = ("test_pass_at_1.png", "train_test_gap.png", "pass_at_k.png", "ablation.png",
           "by_level.png", "transfer.png")
LABELS = ["RestemConfig.num_samples=4", "RestemConfig.num_samples=2"]


def pct(value):
  return f"{100 * value:.1f}"


def tables(text):
  """{section title: [{column: cell}, ...] for each table of the section}."""
  out, title, rows = {}, None, None
  for line in text.splitlines() + [""]:
    if line.startswith("#"):
      title = line.lstrip("# ")
    elif line.startswith("|"):
      cells = [c.strip() for c in line.strip("|").split(" | ")]
      if rows is None:
        rows, header = [], cells
      elif set(cells) != {"---"}:
        rows.append(dict(zip(header, cells)))
    elif rows is not None:
      out.setdefault(title, []).append(rows)
      rows = None
  return out


def read_json(*path):
  with open(os.path.join(*path)) as f:
    return json.load(f)


def evaluate_transfer(workdir):
  """restem_jax.transfer on iteration 1's checkpoint, with the micro run's engine."""
  gin.clear_config()
  gin.parse_config_files_and_bindings([test_loop.MICRO], [])
  try:
    task = micro_task.make_micro_task()
    build = configurables.build
    engine = configurables.make_engine(build(configurables.ModelConfig), task.vocabulary,
                                       build(configurables.MeshConfig),
                                       build(configurables.RestemConfig))
    transfer.evaluate_tasks(engine, os.path.join(workdir, "iter_1", "checkpoint"), [task.name],
                            os.path.join(workdir, "transfer"),
                            build(configurables.EvalConfig), max_test=8)
  finally:
    gin.clear_config()


def copy_run(src, dst, *extra_bindings):
  """A copy of a run's stage files (no checkpoints or samples), with bindings added to its
  config.gin and fingerprint.json as if the run had been started with them."""
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoint", "samples", "base",
                                                          "tensorboard"))
  with open(os.path.join(dst, "config.gin"), "a") as f:
    f.writelines(f"\n{key} = {value}\n" for key, value in extra_bindings)
  fingerprint = read_json(dst, "fingerprint.json")
  fingerprint["bindings"].update(extra_bindings)
  with open(os.path.join(dst, "fingerprint.json"), "w") as f:
    json.dump(fingerprint, f)
  return dst


class ReportTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.a, cls.b = os.path.join(cls.tmp, "a"), os.path.join(cls.tmp, "b")
    test_loop.run_micro(cls.a)
    # sample_batch is placement only: it must not show up as a knob.
    test_loop.run_micro(cls.b, "RestemConfig.num_samples = 2", "RestemConfig.sample_batch = 8")
    evaluate_transfer(cls.a)
    cls.out = os.path.join(cls.tmp, "report")
    cls.text = report.report([cls.a, cls.b], cls.out)
    cls.tables = tables(cls.text)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp)
    super().tearDownClass()

  def test_writes_every_figure_and_shows_it(self):
    for name in FIGURES:
      with open(os.path.join(self.out, name), "rb") as f:
        self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", name)
      self.assertIn(f"]({name})", self.text)
    self.assertFalse(os.path.exists(os.path.join(self.out, "difficulty.png")))
    with open(os.path.join(self.out, "report.md")) as f:
      self.assertEqual(f.read(), self.text)

  def test_labels_are_the_differing_binding(self):
    runs_table = self.tables["ReST^EM report"][0]
    self.assertEqual([r["run"] for r in runs_table], LABELS)
    self.assertEqual([r["status"] for r in runs_table], ["finished", "finished"])
    knobs = self.tables["What differs between the runs"][0]
    self.assertEqual(knobs, [{"binding": "`RestemConfig.num_samples`", LABELS[0]: "`4`",
                              LABELS[1]: "`2`"}])

  def test_numbers_equal_the_summaries(self):
    summary_rows, iteration_rows = self.tables["Test pass@1 per iteration"]
    pass_k_rows = self.tables["pass@k and maj@k"][0]
    for label, workdir in zip(LABELS, (self.a, self.b)):
      summary = read_json(workdir, "summary.json")
      iterations, best = summary["iterations"], summary["best_iteration"]
      base, control = iterations[0], summary["control"]["test_pass@1"]
      best_pass = iterations[best]["test_pass@1"]
      self.assertEqual([r for r in summary_rows if r["run"] == label], [{
          "run": label, "base": pct(base["test_pass@1"]), "best iteration": str(best),
          "best test pass@1": pct(best_pass),
          "gain over base": f"{100 * (best_pass - base['test_pass@1']):+.1f}",
          "SFT control": pct(control), "best - control": f"{100 * (best_pass - control):+.1f}"}])
      rows = [r for r in iteration_rows if r["run"] == label]
      self.assertLen(rows, len(iterations))
      for row, m in zip(rows, iterations):
        self.assertEqual(row, {
            "run": label, "iteration": str(m["iteration"]), "test pass@1": pct(m["test_pass@1"]),
            "val reward": pct(m["val_reward"]), "train solve rate": pct(m["train_solve_rate"]),
            "train - test": f"{100 * (m['train_solve_rate'] - m['test_pass@1']):+.1f}",
            "kept samples": str(m["num_kept"]), "kept problems": str(m.get("kept_problems", "-")),
            "pass@1": pct(m["pass@k"]["1"]), "pass@4": pct(m["pass@k"]["4"]),
            "maj@4": pct(m["maj@k"]["4"])})
      rows = [r for r in pass_k_rows if r["run"] == label]
      for row, m in zip(rows, (iterations[0], iterations[best])):
        self.assertEqual([row["pass@1"], row["pass@4"], row["maj@4"]],
                         [pct(m["pass@k"]["1"]), pct(m["pass@k"]["4"]), pct(m["maj@k"]["4"])])
      self.assertEqual([r["model"] for r in rows],
                       ["base (iteration 0)", f"best (iteration {best})"])

  def test_gains_by_level_equal_the_summaries(self):
    rows = self.tables["Gains by difficulty level"][0]
    for label, workdir in zip(LABELS, (self.a, self.b)):
      summary = read_json(workdir, "summary.json")
      base = summary["iterations"][0]["test_pass@1_by_level"]
      best = summary["iterations"][summary["best_iteration"]]["test_pass@1_by_level"]
      self.assertEqual(sorted(best), ["Level 0", "Level 1", "Level 2"])
      self.assertEqual([r for r in rows if r["run"] == label], [
          {"run": label, "level": level, "base test pass@1": pct(base[level]),
           "best test pass@1": pct(best[level]),
           "gain": f"{100 * (best[level] - base[level]):+.1f}"} for level in sorted(best)])

  def test_transfer_results(self):
    record = read_json(self.a, "transfer", "transfer_summary.json")["micro_largest_digit"]
    self.assertEqual(self.tables["Transfer"][0], [{
        "run": LABELS[0], "checkpoint": "`iter_1/checkpoint`", "task": "micro_largest_digit",
        "split": "test", "problems": "8", "test pass@1": pct(record["test_pass@1"]),
        "pass@1": pct(record["pass@k"]["1"]), "pass@4": pct(record["pass@k"]["4"]),
        "maj@4": pct(record["maj@k"]["4"])}])

  def test_partly_finished_workdir_reports_what_exists(self):
    partial = copy_run(self.a, os.path.join(self.tmp, "partial"))
    os.remove(os.path.join(partial, "iter_2", "metrics.json"))
    os.remove(os.path.join(partial, "summary.json"))
    # A transfer evaluation under way: one task done, no transfer_summary.json yet.
    os.remove(os.path.join(partial, "transfer", "transfer_summary.json"))
    os.makedirs(os.path.join(partial, "transfer", "bbh"))
    bbh = {"task": "bbh", "split": "test", "checkpoint": os.path.join(partial, "base"),
           "num_problems": 4, "test_pass@1": 0.5, "pass@k": {"1": 0.25}, "maj@k": {},
           "subtask_accuracy": {"a": 1.0, "b": 0.25}, "macro_accuracy": 0.625}
    with open(os.path.join(partial, "transfer", "bbh", "metrics.json"), "w") as f:
      json.dump(bbh, f)
    text = report.report([partial], os.path.join(self.tmp, "partial_report"))
    run = tables(text)["ReST^EM report"][0][0]
    self.assertEqual((run["run"], run["status"], run["iterations"]),
                     ("partial", "partial (no summary.json yet)", "0-1"))
    iterations = read_json(self.a, "summary.json")["iterations"]
    rows = tables(text)["Test pass@1 per iteration"][1]
    self.assertEqual([(r["iteration"], r["test pass@1"]) for r in rows],
                     [(str(m["iteration"]), pct(m["test_pass@1"])) for m in iterations[:2]])
    done = read_json(self.a, "transfer", "micro_largest_digit", "metrics.json")
    self.assertEqual([(r["checkpoint"], r["task"], r["test pass@1"], r["pass@4"],
                       r["macro accuracy"]) for r in tables(text)["Transfer"][0]],
                     [("`base`", "bbh", "50.0", "-", "62.5"),
                      # Evaluated in the original workdir: named by its full path.
                      (f"`{done['checkpoint']}`", "micro_largest_digit", pct(done["test_pass@1"]),
                       pct(done["pass@k"]["4"]), "-")])

  def test_a_task_graded_by_hand_shows_its_points(self):
    graded = copy_run(self.a, os.path.join(self.tmp, "graded"))
    os.makedirs(os.path.join(graded, "transfer", "restem_hungarian_exam"))
    exam = {"task": "restem_hungarian_exam", "split": "test",
            "checkpoint": os.path.join(graded, "iter_1", "checkpoint"), "num_problems": 33,
            "test_pass@1": None, "grading_sheet": "sheet.csv", "graded": 2, "points": 7.5}
    with open(os.path.join(graded, "transfer", "restem_hungarian_exam", "metrics.json"),
              "w") as f:
      json.dump(exam, f)
    out = os.path.join(self.tmp, "graded_report")
    rows = tables(report.report([graded], out))["Transfer"][0]
    self.assertEqual([(r["task"], r["test pass@1"], r["points (graded)"]) for r in rows],
                     [("micro_largest_digit", pct(read_json(
                         self.a, "transfer", "micro_largest_digit", "metrics.json")[
                             "test_pass@1"]), "-"),
                      ("restem_hungarian_exam", "-", "7.5 (2 of 33)")])
    self.assertTrue(os.path.exists(os.path.join(out, "transfer.png")))

  def test_difficulty_bins(self):
    bins_dir = os.path.join(self.tmp, "bins")
    bins = difficulty.write_bins(os.path.join(self.a, "iter_1", "samples"), bins_dir, [0, 0.5, 1])
    workdirs = [copy_run(src, os.path.join(self.tmp, f"bin_{k}"),
                         ("DIFFICULTY_BIN_IDS", repr(os.path.join(bins_dir, f"bin_{k}.txt"))),
                         ("make_math_task.train_ids_file", "%DIFFICULTY_BIN_IDS"))
                for k, src in enumerate((self.a, self.b))]
    out = os.path.join(self.tmp, "bins_report")
    rows = tables(report.report(workdirs, out))["Gains by difficulty bin"][0]
    with open(os.path.join(out, "difficulty.png"), "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    for k, (row, src) in enumerate(zip(rows, (self.a, self.b))):
      summary = read_json(src, "summary.json")
      base = summary["iterations"][0]["test_pass@1"]
      best = summary["iterations"][summary["best_iteration"]]["test_pass@1"]
      ids_file = os.path.join(bins_dir, f"bin_{k}.txt")
      self.assertEqual(row, {
          "run": f"DIFFICULTY_BIN_IDS='{ids_file}', {LABELS[k]}", "ids file": f"`{ids_file}`",
          "bin (base solve rate)": ["bin_0 [0, 0.5)", "bin_1 [0.5, 1]"][k],
          "problems": str(len(bins[k])), "base test pass@1": pct(base),
          "best test pass@1": pct(best), "gain": f"{100 * (best - base):+.1f}"})

  def test_labels_flag_overrides(self):
    text = report.report([self.a, self.b], os.path.join(self.tmp, "named"), ["ours", "fewer"])
    self.assertEqual([r["run"] for r in tables(text)["ReST^EM report"][0]], ["ours", "fewer"])
    with self.assertRaisesRegex(runs_lib.ReportError, "1 labels for 2 workdirs"):
      report.report([self.a, self.b], os.path.join(self.tmp, "named"), ["one"])

  def test_not_a_workdir(self):
    with self.assertRaisesRegex(runs_lib.ReportError, "is not a ReST\\^EM workdir"):
      report.report([self.out], os.path.join(self.tmp, "nothing"))
    with self.assertRaisesRegex(runs_lib.ReportError, "does not exist"):
      report.report([os.path.join(self.tmp, "missing")], os.path.join(self.tmp, "nothing"))
    started = os.path.join(self.tmp, "started")
    os.makedirs(started)
    shutil.copy(os.path.join(self.a, "config.gin"), started)
    with self.assertRaisesRegex(runs_lib.ReportError, "has no evaluation of its base yet"):
      report.report([started], os.path.join(self.tmp, "nothing"))
    # The CLI says so in one line, without a traceback.
    result = subprocess.run([sys.executable, "-m", "restem_jax.report", self.out,
                             f"--out={self.tmp}/cli"], capture_output=True, text=True, check=False)
    self.assertEqual(result.returncode, 1)
    self.assertIn(f"error: {self.out} is not a ReST^EM workdir", result.stderr)
    self.assertNotIn("Traceback", result.stderr)


if __name__ == "__main__":
  absltest.main()
