r"""Transfer evaluation: one checkpoint, several tasks, the loop's metrics.

  python -m restem_jax.transfer --gin_file=gin_configs/math.gin \
      --checkpoint=/runs/math/iter_2/checkpoint --tasks=restem_gsm8k,restem_humaneval \
      --data_dir=/data --workdir=/runs/math/transfer [--max_test=N]

The gin files give the model (`ModelConfig`), its vocabulary
(`task_vocabulary.checkpoint_dir`), the evaluation protocol (`EvalConfig`:
greedy pass@1, pass@k at T=1.0 top-p 0.95, maj@k) and the sampler limits
(`RestemConfig.max_prompt_len`, `sample_batch`). For every task it writes
WORKDIR/<task>/metrics.json with the loop's keys (`test_pass@1`, `pass@k`,
`maj@k`; the loop's `val_reward` and `train_solve_rate` do not apply; BBH adds
greedy `subtask_accuracy` and their mean `macro_accuracy`), and
WORKDIR/transfer_summary.json with all of them. A rerun skips finished tasks.

A task without a reward (no answer key: restem_hungarian_exam) gets no pass@k
or maj@k: its greedy answers go to WORKDIR/<task>/grading_sheet.csv (columns
number, question, answer, points; points empty) for a person to fill in place.
Every run reads the sheet back and writes `graded` (rows with points) and
`points` (their sum; null before any) to metrics.json; `test_pass@1` is null.

Paper transfer pairs: trained on MATH -> GSM8K; trained on APPS -> HumanEval.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

from absl import app, flags

from restem_jax import main as cli  # Defines --gin_file, --gin_bindings, --workdir, ...

def _define_flags() -> None:
  """CLI flags (besides restem_jax.main's), defined only when run as a program."""
  flags.DEFINE_string("checkpoint", None, "Parameters to evaluate (Orbax directory, e.g. "
                      "WORKDIR/iter_2/checkpoint or WORKDIR/base).")
  flags.DEFINE_list("tasks", None, "Task names, e.g. restem_gsm8k,restem_humaneval.")
  flags.DEFINE_string("data_dir", None, "Dataset directory (else the gin binding, else "
                      "$RESTEM_DATA_DIR or ./data).")
  flags.DEFINE_integer("max_test", None, "Evaluate only the first N test problems.")
  flags.DEFINE_string("split", "test", "Split to evaluate.")


def evaluate_tasks(engine, checkpoint: str, task_names: Sequence[str], workdir: str,
                   evaluation, data_dir: str | None = None, max_test: int | None = None,
                   split: str = "test") -> dict[str, Any]:
  """Evaluates `checkpoint` on each task through `engine` (its vocabulary is the tasks')."""
  from restem_jax.checkpoint_io import files  # pylint: disable=import-outside-toplevel
  from restem_jax.engine.sampler import SamplingConfig  # pylint: disable=import-outside-toplevel
  from restem_jax.restem import grading_sheet  # pylint: disable=import-outside-toplevel
  from restem_jax.restem.evaluation import Evaluator  # pylint: disable=import-outside-toplevel
  from restem_jax.restem.stages import stage  # pylint: disable=import-outside-toplevel
  from restem_jax.tasks import base, benchmarks  # pylint: disable=import-outside-toplevel

  files.check_shared(workdir)
  params = engine.restore(checkpoint)

  def task_for(name: str) -> base.TaskSpec:
    if name in benchmarks.FACTORIES:
      kwargs = {"vocabulary": engine.vocabulary}
      if data_dir is not None:
        kwargs["data_dir"] = data_dir
      return benchmarks.FACTORIES[name](**kwargs)
    return base.get(name)  # Registered by an imported module or gin.

  def evaluate(task: base.TaskSpec) -> dict[str, Any]:
    problems = base.load_problems(task.name, split)[:max_test]
    if task.has_reward:
      result = Evaluator(task, engine, evaluation).evaluate(
          params, test=problems, validation=[], train=[], train_sampling=SamplingConfig())
      for key in ("val_reward", "train_solve_rate"):  # No validation / train set here.
        result.pop(key, None)
      print(f"{task.name}: test_pass@1={result['test_pass@1']:.4f} pass@k={result['pass@k']} "
            f"maj@k={result['maj@k']}", flush=True)
    else:
      result = grading_sheet.grade_by_hand(engine, params, task, problems, evaluation,
                                           os.path.join(workdir, task.name, grading_sheet.SHEET))
    return {"task": task.name, "split": split, "checkpoint": checkpoint,
            "num_problems": len(problems), **result}

  summary = {}
  for name in task_names:
    task, metrics_path = task_for(name), os.path.join(workdir, name, "metrics.json")
    if task.has_reward:
      summary[name] = stage(metrics_path, lambda task=task: evaluate(task))
    else:  # Not staged: each run reads the points filled in since.
      summary[name] = evaluate(task)
      files.write_json(metrics_path, summary[name])
  files.write_json(os.path.join(workdir, "transfer_summary.json"), summary)
  return summary


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  for flag, value in (("--checkpoint", f.checkpoint), ("--tasks", f.tasks),
                      ("--workdir", cli.WORKDIR.value), ("--gin_file", cli.GIN_FILES.value)):
    if not value:
      raise app.UsageError(f"{flag} is required")
  cli.parse_gin(cli.GIN_FILES.value, cli.BINDINGS.value, cli.SEARCH_PATHS.value)
  cli.initialize_distributed()
  from restem_jax.checkpoint_io import files  # pylint: disable=import-outside-toplevel
  files.makedirs(cli.WORKDIR.value)
  from restem_jax import configurables  # pylint: disable=import-outside-toplevel
  engine, evaluation = configurables.transfer_setup()
  evaluate_tasks(engine, f.checkpoint, f.tasks, cli.WORKDIR.value, evaluation, f.data_dir,
                 f.max_test, f.split)


if __name__ == "__main__":
  _define_flags()
  app.run(main, argv=cli.rewrite_gin_flags(sys.argv))
