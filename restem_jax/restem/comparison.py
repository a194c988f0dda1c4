"""report.md and its figures for a set of runs: what each run reached and what differs.

Every number in report.md is a stage file's value in percent, to one
decimal, so it can be checked against the run's summary.json; gains are
differences of those values (points).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from restem_jax.checkpoint_io import files
from restem_jax.restem import figures, reporting
from restem_jax.restem.runs import (Run, binding_value, checkpoint_name, difficulty_runs,
                                    differing_bindings)

REPORT = "report.md"


def pct(value: float | None) -> str:
  return "-" if value is None else f"{figures.percent(value):.1f}"


def gain(new: float, old: float) -> str:
  return f"{figures.percent(new - old):+.1f}"


def write_report(runs: Sequence[Run], out: str) -> str:
  """Draws the figures into `out`, writes `out`/report.md, and returns its text."""
  files.makedirs(out)
  sections = [_runs_section(runs), _knobs_section(runs)]

  def figure(name: str, draw: Callable[[str, Sequence[Run]], None], title: str,
             body: Sequence[str]) -> None:
    draw(os.path.join(out, name), runs)
    sections.append("\n".join([f"## {title}", "", f"![{title}]({name})", "", *body]))

  figure("test_pass_at_1.png", figures.pass_at_1_curves, "Test pass@1 per iteration",
         ["Greedy test pass@1; the star is the iteration chosen by validation reward (the "
          "loop's rule), the dashed line the run's SFT control (the M-step's steps on "
          "labelled solutions).", "", *_summary_table(runs), "", *_iterations_table(runs)])
  figure("train_test_gap.png", figures.train_test_gap, "Train/test gap",
         ["Train: solve rate of samples at the E-step's temperature on training problems "
          "(EvalConfig.train_eval_size of them); test: greedy pass@1. The gap column above "
          "is train minus test, in points."])
  figure("pass_at_k.png", figures.pass_at_k, "pass@k and maj@k",
         ["Unbiased pass@k and majority-vote maj@k over the test set at the pass@k protocol "
          "(EvalConfig: T=1.0, top-p 0.95 by default), for the base and the best iteration; "
          "pass@k is drawn for every k up to the samples drawn (EvalConfig.pass_k_samples), "
          "marked and tabled at EvalConfig.pass_ks; maj@k at EvalConfig.maj_ks.", "",
          *_pass_k_table(runs)])
  if len(runs) > 1:
    figure("ablation.png", figures.ablation, "Base, best iteration and SFT control per run",
           ["Each run's bars side by side: the runs differ in the bindings listed above."])
  if figures.level_runs(runs):
    figure("by_level.png", figures.by_level, "Gains by difficulty level",
           ["Greedy test pass@1 per difficulty level of the test problems (MATH's "
            "'level' field), for the base and the best iteration.", "",
            *_level_table(runs)])
  if any(r.difficulty for r in runs):
    figure("difficulty.png", figures.difficulty, "Gains by difficulty bin",
           ["Runs whose training problems are one difficulty bin (`*.train_ids_file`, see "
            "gin_configs/ablations/difficulty_bin.gin); range: the base's solve rate that "
            "defines the bin, from the bins.json beside the ids file.", "",
            *_difficulty_table(runs)])
  if any(r.transfer for r in runs):
    figure("transfer.png", figures.transfer, "Transfer",
           ["restem_jax.transfer's evaluations found in the workdirs (finished tasks of an "
            "evaluation still under way included).", "", *_transfer_table(runs)])
  text = "\n\n".join(sections) + "\n"
  files.write_text(os.path.join(out, REPORT), text)
  return text


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  def line(cells):
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
  return [line(header), line(["---"] * len(header)), *map(line, rows)]


def _k_cells(metrics: dict[str, Any], pass_ks: Sequence[int], maj_ks: Sequence[int]) -> list[str]:
  """pass@k then maj@k cells for the given k; "-" where `metrics` has no such k."""
  flat = reporting.scalars(metrics)
  return [pct(flat.get(f"pass@{k}")) for k in pass_ks] + [pct(flat.get(f"maj@{k}")) for k in maj_ks]


def _runs_section(runs: Sequence[Run]) -> str:
  rows = []
  for run in runs:
    numbers = [m["iteration"] for m in run.iterations]
    status = "finished" if run.finished else "partial (no summary.json yet)"
    rows.append([run.label, f"`{run.workdir}`", run.task or "-", status,
                 f"0-{numbers[-1]}" if numbers == list(range(len(numbers)))
                 else ", ".join(map(str, numbers)), run.best["iteration"]])
  return "\n".join(["# ReST^EM report", "", *_table(
      ["run", "workdir", "task", "status", "iterations", "best iteration"], rows)])


def _knobs_section(runs: Sequence[Run]) -> str:
  keys = differing_bindings(runs)
  if len(runs) < 2:
    body = ["One run: nothing to compare."]
  elif not keys:
    body = ["The runs' config.gin bind the same values (runs are named by workdir)."]
  else:
    body = ["Result-determining bindings (config.gin) whose values differ between the runs "
            "(placement-only ones, such as the mesh or sample_batch, are left out):", "",
            *_table(["binding", *(r.label for r in runs)],
                    [[f"`{k}`", *(f"`{binding_value(r, k)}`" for r in runs)] for k in keys])]
  return "\n".join(["## What differs between the runs", "", *body])


def _summary_table(runs: Sequence[Run]) -> list[str]:
  rows = []
  for run in runs:
    base, best = run.base, run.best
    control = run.control["test_pass@1"] if run.control else None
    rows.append([run.label, pct(base["test_pass@1"]), best["iteration"],
                 pct(best["test_pass@1"]), gain(best["test_pass@1"], base["test_pass@1"]),
                 pct(control), "-" if control is None else gain(best["test_pass@1"], control)])
  return _table(["run", "base", "best iteration", "best test pass@1", "gain over base",
                 "SFT control", "best - control"], rows)


def _iterations_table(runs: Sequence[Run]) -> list[str]:
  pass_ks = figures.ks([m for r in runs for m in r.iterations], "pass@k")
  maj_ks = figures.ks([m for r in runs for m in r.iterations], "maj@k")
  rows = []
  for run in runs:
    for m in run.iterations:
      rows.append([run.label, m["iteration"], pct(m["test_pass@1"]), pct(m["val_reward"]),
                   pct(m["train_solve_rate"]), gain(m["train_solve_rate"], m["test_pass@1"]),
                   m.get("num_kept", "-"), m.get("kept_problems", "-"),
                   *_k_cells(m, pass_ks, maj_ks)])
  return _table(["run", "iteration", "test pass@1", "val reward", "train solve rate",
                 "train - test", "kept samples", "kept problems",
                 *(f"pass@{k}" for k in pass_ks), *(f"maj@{k}" for k in maj_ks)], rows)


def _pass_k_table(runs: Sequence[Run]) -> list[str]:
  pass_ks = figures.ks([m for r in runs for m in (r.base, r.best)], "pass@k")
  maj_ks = figures.ks([m for r in runs for m in (r.base, r.best)], "maj@k")
  rows = []
  for run in runs:
    for name, m in (("base", run.base), ("best", run.best)):
      rows.append([run.label, f"{name} (iteration {m['iteration']})",
                   *_k_cells(m, pass_ks, maj_ks)])
  return _table(["run", "model", *(f"pass@{k}" for k in pass_ks),
                 *(f"maj@{k}" for k in maj_ks)], rows)


def _level_table(runs: Sequence[Run]) -> list[str]:
  rows = []
  for run in figures.level_runs(runs):
    base = run.base.get("test_pass@1_by_level", {})
    best = run.best["test_pass@1_by_level"]
    for level in sorted(best):
      rows.append([run.label, level, pct(base.get(level)), pct(best[level]),
                   gain(best[level], base[level]) if level in base else "-"])
  return _table(["run", "level", "base test pass@1", "best test pass@1", "gain"], rows)


def _difficulty_table(runs: Sequence[Run]) -> list[str]:
  rows = []
  for run in difficulty_runs(runs):
    bin_, base, best = run.difficulty, run.base, run.best
    rows.append([run.label, f"`{bin_.ids_file}`", figures.difficulty_name(run),
                 "-" if bin_.num_problems is None else bin_.num_problems,
                 pct(base["test_pass@1"]), pct(best["test_pass@1"]),
                 gain(best["test_pass@1"], base["test_pass@1"])])
  return _table(["run", "ids file", "bin (base solve rate)", "problems", "base test pass@1",
                 "best test pass@1", "gain"], rows)


def _transfer_table(runs: Sequence[Run]) -> list[str]:
  records = [(r, t) for r in runs for t in r.transfer]
  pass_ks = figures.ks([t for _, t in records], "pass@k")
  maj_ks = figures.ks([t for _, t in records], "maj@k")
  # BIG-Bench Hard's headline: the mean over its subtasks of greedy accuracy.
  macro = ["macro accuracy"] if any("macro_accuracy" in t for _, t in records) else []
  # A task graded by hand (the Hungarian exam): the points filled in so far.
  graded = ["points (graded)"] if any("graded" in t for _, t in records) else []
  rows = [[run.label, f"`{checkpoint_name(run, t['checkpoint'])}`", t["task"],
           t.get("split", "-"), t.get("num_problems", "-"), pct(t["test_pass@1"]),
           *_k_cells(t, pass_ks, maj_ks), *(pct(t.get("macro_accuracy")) for _ in macro),
           *(_points(t) for _ in graded)]
          for run, t in records]
  return _table(["run", "checkpoint", "task", "split", "problems", "test pass@1",
                 *(f"pass@{k}" for k in pass_ks), *(f"maj@{k}" for k in maj_ks), *macro,
                 *graded], rows)


def _points(record: dict[str, Any]) -> str:
  if "graded" not in record:
    return "-"
  points = "-" if record["points"] is None else f"{record['points']:g}"
  return f"{points} ({record['graded']} of {record.get('num_problems', '?')})"
