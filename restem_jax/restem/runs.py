"""Finished or partly finished ReST^EM workdirs, read back for comparison.

A run's numbers come from its stage files, not from summary.json: the loop
writes iter_<i>/metrics.json (and control/metrics.json) as each stage ends
and summary.json only at the very end, so reading the stages reports a run
that is still going, or was stopped, with what it has. What distinguishes the
runs is read from each one's config.gin, so an ablation is labelled by the
binding it changed, not by what someone remembers typing.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import posixpath
import re
from typing import Any, Sequence

from gin import config_parser

from restem_jax.checkpoint_io import files
from restem_jax.restem import workdir as workdir_lib

SUMMARY = "summary.json"
TRANSFER_SUMMARY = "transfer_summary.json"
_ITERATION_DIR = re.compile(r"iter_(\d+)$")
# What the loop itself writes at a workdir's top level; any other folder may hold
# a transfer evaluation (restem_jax.transfer's --workdir, e.g. WORKDIR/transfer).
_LOOP_DIRS = ("base", "base_training", "control", "tensorboard")


class ReportError(ValueError):
  """A path that is not a ReST^EM workdir, or nothing in it to report yet."""


@dataclasses.dataclass(frozen=True)
class DifficultyBin:
  """The training subset of a difficulty ablation (restem_jax.tasks.difficulty's files)."""
  ids_file: str
  name: str  # "bin_0"
  solve_rates: str | None  # The base's solve-rate range, e.g. "[0, 0.25)", from bins.json.
  num_problems: int | None


@dataclasses.dataclass
class Run:
  """One workdir's evaluations, as far as the run got."""
  workdir: str
  bindings: dict[str, str]  # Every binding of config.gin: "scope/Class.param" -> value text.
  result_keys: frozenset[str]  # Those that can change results (fingerprint.json's).
  iterations: list[dict[str, Any]]
  control: dict[str, Any] | None
  transfer: list[dict[str, Any]]  # Per-task metrics.json of restem_jax.transfer.
  finished: bool
  task: str | None
  difficulty: DifficultyBin | None  # Where the run trained on one difficulty bin.
  label: str = ""

  @property
  def best(self) -> dict[str, Any]:
    """The loop's choice: highest validation reward, the earliest on a tie."""
    return max(self.iterations, key=lambda m: (m["val_reward"], -m["iteration"]))

  @property
  def base(self) -> dict[str, Any]:
    return self.iterations[0]


def load_runs(workdirs: Sequence[str], labels: Sequence[str] | None = None) -> list[Run]:
  """Reads every workdir and labels the runs (by default, with the bindings that differ)."""
  runs = [load_run(w) for w in workdirs]
  if labels is not None and len(labels) != len(runs):
    raise ReportError(f"{len(labels)} labels for {len(runs)} workdirs: give one per workdir.")
  for run, label in zip(runs, labels or default_labels(runs)):
    run.label = label
  return runs


def load_run(workdir: str) -> Run:
  """One workdir's stage files and configuration; ReportError if it holds no run."""
  workdir = files.resolve(workdir).rstrip("/")
  config = os.path.join(workdir, workdir_lib.CONFIG)
  if not files.exists(workdir):
    raise ReportError(f"{workdir} does not exist.")
  if not files.exists(config):
    raise ReportError(f"{workdir} is not a ReST^EM workdir: it has no {workdir_lib.CONFIG}, "
                      "which restem_jax.main writes when a run starts (give the run's --workdir).")
  bindings = parse_bindings(files.read_text(config))
  fingerprint = os.path.join(workdir, workdir_lib.FINGERPRINT)
  # Placement-only bindings (mesh, sample_batch) are left out of the fingerprint: they
  # cannot be what an ablation changed.
  result_keys = frozenset(files.read_json(fingerprint)["bindings"] if files.exists(fingerprint)
                          else bindings)
  names = files.listdir(workdir)
  numbers = sorted(int(m.group(1)) for m in map(_ITERATION_DIR.match, names) if m)
  metrics = [os.path.join(workdir, f"iter_{i}", "metrics.json") for i in numbers]
  iterations = [files.read_json(p) for p in metrics if files.exists(p)]
  if not iterations or iterations[0]["iteration"] != 0:
    raise ReportError(f"{workdir} has no evaluation of its base yet (iter_0/metrics.json, "
                      "written once the base is evaluated): nothing to compare against.")
  control = os.path.join(workdir, "control", "metrics.json")
  summary = os.path.join(workdir, SUMMARY)
  finished = files.exists(summary)
  return Run(workdir=workdir, bindings=bindings, result_keys=result_keys, iterations=iterations,
             control=files.read_json(control) if files.exists(control) else None,
             transfer=_transfer(workdir, [n for n in names if n not in _LOOP_DIRS
                                          and not _ITERATION_DIR.match(n)]),
             finished=finished, task=files.read_json(summary).get("task") if finished else None,
             difficulty=_difficulty(bindings))


class _Reference:
  """A gin reference (`@f()`, `%MACRO`), kept as written: it is compared, not called."""

  def __init__(self, text: str):
    self.text = text

  def __repr__(self) -> str:
    return self.text


class _Delegate(config_parser.ParserDelegate):

  def configurable_reference(self, scoped_configurable_name: str, evaluate: bool) -> _Reference:
    return _Reference(f"@{scoped_configurable_name}{'()' if evaluate else ''}")

  def macro(self, macro_name: str) -> _Reference:
    return _Reference(f"%{macro_name}")


def parse_bindings(text: str) -> dict[str, str]:
  """config.gin's bindings, keyed as fingerprint.json keys them ("scope/Class.param"; a
  macro by its name), each value as repr() of what gin parsed."""
  out = {}
  for statement in config_parser.ConfigParser(text, _Delegate()):
    if isinstance(statement, config_parser.BindingStatement):
      name = statement.selector.rsplit(".", 1)[-1]
      key = (f"{statement.scope + '/' if statement.scope else ''}{name}"
             + (f".{statement.arg_name}" if statement.arg_name else ""))
      out[key] = repr(statement.value)
  return out


def differing_bindings(runs: Sequence[Run]) -> list[str]:
  """Result-determining bindings whose values are not the same in every run."""
  keys = set().union(*(r.result_keys for r in runs))
  return sorted(k for k in keys if len({r.bindings.get(k) for r in runs}) > 1)


def binding_value(run: Run, key: str) -> str:
  return run.bindings.get(key, "(default)")


def default_labels(runs: Sequence[Run]) -> list[str]:
  """`Key=value` of each differing binding; the workdir's name where that names no run apart."""
  keys = differing_bindings(runs)
  labels = [_label(r, keys) for r in runs]
  if not keys or len(set(labels)) < len(labels):
    labels = [posixpath.basename(r.workdir) for r in runs]
  if len(set(labels)) < len(labels):
    labels = [r.workdir for r in runs]
  return labels


def _label(run: Run, keys: Sequence[str]) -> str:
  """The run's values of `keys`, short: a binding to a macro repeats the macro's own line,
  and unset ones are named only when the run sets none of the others (the baseline)."""
  shown = [k for k in keys if not binding_value(run, k).startswith("%")]
  bound = [k for k in shown if k in run.bindings]
  return ", ".join(f"{k}={binding_value(run, k)}" for k in bound or shown)


def difficulty_runs(runs: Sequence[Run]) -> list[Run]:
  """The runs trained on one difficulty bin, by bin (bin_2 before bin_10)."""
  def order(run: Run) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", run.difficulty.name)]
  return sorted((r for r in runs if r.difficulty), key=order)


def checkpoint_name(run: Run, checkpoint: str) -> str:
  """A transfer checkpoint relative to its run's workdir where it lies inside it."""
  full = files.resolve(checkpoint).rstrip("/")
  return full[len(run.workdir) + 1:] if full.startswith(run.workdir + "/") else checkpoint


def _transfer(workdir: str, folders: Sequence[str]) -> list[dict[str, Any]]:
  """Every task result of restem_jax.transfer under WORKDIR/<folder>/: transfer_summary.json
  where it was written, and the per-task metrics.json of an evaluation still under way."""
  out = []
  for folder in sorted(folders):
    path = os.path.join(workdir, folder)
    summary = os.path.join(path, TRANSFER_SUMMARY)
    try:
      names = files.listdir(path)
    except NotADirectoryError:
      continue
    results = dict(files.read_json(summary)) if files.exists(summary) else {}
    for task in sorted(names):
      metrics = os.path.join(path, task, "metrics.json")
      if task not in results and files.exists(metrics):
        record = files.read_json(metrics)
        if isinstance(record, dict) and "checkpoint" in record:
          results[task] = record
    out.extend(results[t] for t in sorted(results))
  return out


def _difficulty(bindings: dict[str, str]) -> DifficultyBin | None:
  """The bin a `*.train_ids_file` binding (directly or through a macro) names, if any."""
  for key, value in bindings.items():
    if key.endswith(".train_ids_file"):
      path = _literal(bindings.get(value[1:], "None") if value.startswith("%") else value)
      if isinstance(path, str):
        return _difficulty_bin(path)
  return None


def _difficulty_bin(path: str) -> DifficultyBin:
  """The bin `path` names; its range and size from the bins.json written beside it (a
  relative path is read from the current directory)."""
  name = posixpath.splitext(posixpath.basename(path))[0]
  index = re.fullmatch(r"bin_(\d+)", name)
  bins = posixpath.join(posixpath.dirname(path), "bins.json")
  rates, count = None, None
  if index and files.exists(bins):
    record, k = files.read_json(bins), int(index.group(1))
    edges = record.get("edges", [])
    if k + 1 < len(edges):
      # The last bin holds its upper edge too (restem_jax.tasks.difficulty.bin_ids).
      rates = f"[{edges[k]:g}, {edges[k + 1]:g}{']' if k + 2 == len(edges) else ')'}"
      count = int(record["counts"][k])
  return DifficultyBin(ids_file=path, name=name, solve_rates=rates, num_problems=count)


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return None
