"""The paper's figures, drawn for any set of runs (restem_jax.report lays them out).

In the curves, colour names the run (run i has the i-th colour of
matplotlib's cycle in every figure) and line style names what is drawn, so
each legend lists the runs once plus the styles; an SFT control is dashed.
Bars are coloured by what they show.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Sequence

import numpy as np

from restem_jax.restem import reporting  # Sets the Agg backend before pyplot loads.
from restem_jax.restem.runs import Run, checkpoint_name, difficulty_runs
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-order
from matplotlib.artist import Artist  # noqa: E402  pylint: disable=wrong-import-order
from matplotlib.lines import Line2D  # noqa: E402  pylint: disable=wrong-import-order
from matplotlib.patches import Patch  # noqa: E402  pylint: disable=wrong-import-order

_BAR_WIDTH = 0.8
_PASS_AT_1 = "test pass@1, greedy (%)"
_ITERATION = "ReST^EM iteration (0 = base)"


def percent(value: float) -> float:
  return 100 * value


def ks(metrics: Sequence[dict[str, Any]], key: str) -> list[int]:
  """The k values of `key` ("pass@k", "maj@k") any of `metrics` holds, ascending."""
  return sorted({int(k) for m in metrics for k in m.get(key, {})})


def _color(i: int) -> str:
  return f"C{i % 10}"  # Matplotlib's cycle has ten colours.


def _wrap(label: str) -> str:
  return textwrap.fill(label, 40)


def _run_handles(runs: Sequence[Run], styles: Sequence[tuple[str, str, str]]) -> list[Artist]:
  """A legend entry per run (its colour) and per (line style, marker, meaning)."""
  return ([Line2D([], [], color=_color(i), lw=2, label=_wrap(r.label)) for i, r in enumerate(runs)]
          + [Line2D([], [], color="gray", ls=ls, marker=marker, label=text)
             for ls, marker, text in styles])


def _figure(width: float, handles: Sequence[Artist], panels: int = 1):
  """A figure with one legend above its panels, taller by what the legend needs."""
  lines = sum(h.get_label().count("\n") + 1 for h in handles)
  fig, axes = plt.subplots(1, panels, figsize=(width, 3.5 + 0.16 * math.ceil(lines / 2)),
                           layout="constrained")
  fig.legend(handles=handles, loc="outside upper center", ncols=2, fontsize=7)
  for ax in np.atleast_1d(axes):
    ax.grid(alpha=0.3)
  return fig, axes


def pass_at_1_curves(path: str, runs: Sequence[Run]) -> None:
  """Paper figs. 2-3: test pass@1 per iteration; the best (by validation reward) starred."""
  fig, ax = _figure(6, _run_handles(runs, [
      ("-", "o", "test pass@1"), ("", "*", "best iteration (validation reward)"),
      ("--", "", "SFT control")]))
  for i, run in enumerate(runs):
    xs = [m["iteration"] for m in run.iterations]
    ax.plot(xs, [percent(m["test_pass@1"]) for m in run.iterations], "o-", color=_color(i))
    ax.plot(run.best["iteration"], percent(run.best["test_pass@1"]), "*", color=_color(i),
            markersize=14)
    if run.control is not None:
      ax.axhline(percent(run.control["test_pass@1"]), color=_color(i), ls="--")
  ax.set_xlabel(_ITERATION)
  ax.set_ylabel(_PASS_AT_1)
  ax.xaxis.get_major_locator().set_params(integer=True)
  reporting.save_figure(fig, path)


def train_test_gap(path: str, runs: Sequence[Run]) -> None:
  """Paper fig. 4: train solve rate against test pass@1, and the gap between them."""
  fig, (left, right) = _figure(10, _run_handles(runs, [
      ("-", "o", "test pass@1 (greedy); right: train - test"),
      (":", "s", "train solve rate (E-step temperature)")]), panels=2)
  for i, run in enumerate(runs):
    xs = [m["iteration"] for m in run.iterations]
    train = np.array([percent(m["train_solve_rate"]) for m in run.iterations])
    test = np.array([percent(m["test_pass@1"]) for m in run.iterations])
    left.plot(xs, test, "o-", color=_color(i))
    left.plot(xs, train, "s:", color=_color(i))
    right.plot(xs, train - test, "o-", color=_color(i))
  left.set_ylabel("%")
  right.set_ylabel("train - test (points)")
  right.axhline(0, color="gray", lw=0.8)
  for ax in (left, right):
    ax.set_xlabel(_ITERATION)
    ax.xaxis.get_major_locator().set_params(integer=True)
  reporting.save_figure(fig, path)


def pass_at_k(path: str, runs: Sequence[Run]) -> None:
  """Paper fig. 5: pass@k and maj@k over k, for each run's base and best iteration."""
  fig, axes = _figure(10, _run_handles(runs, [(":", "s", "base"), ("-", "o", "best iteration")]),
                      panels=2)
  for ax, key in zip(axes, ("pass@k", "maj@k")):
    for i, run in enumerate(runs):
      for metrics, style in ((run.base, ":"), (run.best, "-")):
        points, values = _k_points(metrics, key)
        # A full curve (every k) is a line; marks sit on the k values the run reports.
        ax.plot(points, values, style, color=_color(i))
        marked = ks([metrics], key)
        ax.plot(marked, [percent(metrics[key][str(k)]) for k in marked],
                "s" if style == ":" else "o", color=_color(i))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks([m for r in runs for m in (r.base, r.best)], key))
    ax.xaxis.set_major_formatter("{x:g}")
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel("k (samples at the pass@k protocol's temperature)")
    ax.set_ylabel(f"test {key} (%)")
  reporting.save_figure(fig, path)


def _k_points(metrics: dict[str, Any], key: str) -> tuple[list[int], list[float]]:
  """(k, %) of `key` over k: every k from "pass@k_curve" where the run has it."""
  if key == "pass@k" and metrics.get("pass@k_curve"):
    curve = metrics["pass@k_curve"]
    return list(range(1, len(curve) + 1)), [percent(v) for v in curve]
  points = ks([metrics], key)
  return points, [percent(metrics[key][str(k)]) for k in points]


def by_level(path: str, runs: Sequence[Run]) -> None:
  """Paper's gains by difficulty: test pass@1 per level (MATH's 1-5), base and best iteration."""
  runs = level_runs(runs)
  levels = sorted({lv for r in runs for lv in r.best["test_pass@1_by_level"]})
  series: dict[str, list[float | None]] = {}
  for run in runs:
    for name, metrics in (("base", run.base), ("best", run.best)):
      values = metrics.get("test_pass@1_by_level", {})
      series[f"{run.label}: {name}"] = [
          percent(values[lv]) if lv in values else None for lv in levels]
  colors = [f"C{j}" for j in range(len(series))]
  _bar_figure(path, levels, series, colors, "test problems by difficulty level")


def level_runs(runs: Sequence[Run]) -> list[Run]:
  """The runs whose evaluation has test pass@1 per difficulty level."""
  return [r for r in runs if r.best.get("test_pass@1_by_level")]


def _bar_figure(path: str, groups: Sequence[str], series: dict[str, Sequence[float | None]],
                colors: Sequence[str], xlabel: str = "") -> None:
  """Grouped bars, one group per name in `groups` and one bar per series (None: no bar)."""
  handles = [Patch(color=c, label=_wrap(name)) for name, c in zip(series, colors)]
  # Wide enough for each group's bars and for its tick label (7 pt: about 0.055 in a character).
  longest = max(len(line) for g in groups for line in g.split("\n"))
  fig, ax = _figure(max(5.0, 1 + len(groups) * max(0.6 * len(series), 0.055 * longest)), handles)
  width = _BAR_WIDTH / len(series)
  for j, (values, color) in enumerate(zip(series.values(), colors)):
    xs = [g + (j - (len(series) - 1) / 2) * width for g, v in enumerate(values) if v is not None]
    bars = ax.bar(xs, [v for v in values if v is not None], width, color=color)
    ax.bar_label(bars, fmt="%.1f", fontsize=6)
  ax.set_xticks(range(len(groups)), groups, fontsize=7)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(_PASS_AT_1)
  reporting.save_figure(fig, path)


def ablation(path: str, runs: Sequence[Run]) -> None:
  """Paper fig. 6 style: base, best iteration and SFT control of each run, side by side."""
  _bar_figure(path, [_wrap(r.label) for r in runs], {
      "base": [percent(r.base["test_pass@1"]) for r in runs],
      "best iteration": [percent(r.best["test_pass@1"]) for r in runs],
      "SFT control": [percent(r.control["test_pass@1"]) if r.control else None for r in runs]},
      ["C7", "C0", "C1"])


def difficulty(path: str, runs: Sequence[Run]) -> None:
  """Gains by difficulty bin: runs trained on one bin, base and best iteration per run."""
  runs = difficulty_runs(runs)
  names = [difficulty_name(r) for r in runs]
  # Runs that share a bin (e.g. seeds) are told apart by their labels.
  shared = len(set(names)) < len(names)
  _bar_figure(path, [f"{n}\n{_wrap(r.label)}" if shared else n for n, r in zip(names, runs)], {
      "base": [percent(r.base["test_pass@1"]) for r in runs],
      "best iteration": [percent(r.best["test_pass@1"]) for r in runs]},
      ["C7", "C0"], "training problems: one difficulty bin (the base's solve rate)")


def difficulty_name(run: Run) -> str:
  """"bin_0 [0, 0.25)": the bin and, where bins.json was found, its solve-rate range."""
  bin_ = run.difficulty
  return f"{bin_.name} {bin_.solve_rates}" if bin_.solve_rates else bin_.name


def transfer(path: str, runs: Sequence[Run]) -> None:
  """Paper's transfer results (MATH -> GSM8K, APPS -> HumanEval): test pass@1 per task."""
  # A task graded by hand (no reward) has points, not an accuracy: the table shows them.
  scored = [(r, t) for r in runs for t in r.transfer if t.get("test_pass@1") is not None]
  tasks = sorted({t["task"] for _, t in scored})
  series: dict[str, list[float | None]] = {}
  for run, record in scored:
    name = f"{run.label}: {checkpoint_name(run, record['checkpoint'])}"
    series.setdefault(name, [None] * len(tasks))[tasks.index(record["task"])] = \
        percent(record["test_pass@1"])
  _bar_figure(path, [_wrap(t) for t in tasks], series, [_color(j) for j in range(len(series))])
