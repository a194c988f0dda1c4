r"""Look at a task: how many examples a split has, and what the model will be asked.

  python -m restem_jax.tasks --task=restem_math --data_dir=/data --split=train --show=2

Prints the number of examples in the split, then the first N prompts (exactly
the text the model continues) and their targets, read back through seqio as
the loop reads them. A missing dataset fails with a message saying which files
to place where.
"""

from __future__ import annotations

import sys

from absl import app, flags

def _define_flags() -> None:
  """CLI flags, defined only when run as a program."""
  flags.DEFINE_string("task", None, "restem_math | restem_gsm8k | restem_apps | "
                      "restem_humaneval (or another registered task).")
  flags.DEFINE_string("data_dir", None, "Directory holding MATH/, gsm8k/, APPS/, "
                      "HumanEval.jsonl.gz (default $RESTEM_DATA_DIR or ./data).")
  flags.DEFINE_string("split", "train", "Split to look at (train, test, labelled).")
  flags.DEFINE_integer("show", 1, "How many prompts (with targets) to print.")
  flags.DEFINE_string("vocabulary", None, "Optional model checkpoint directory: also print "
                      "each prompt's length in that model's tokens.")


def describe(name: str, data_dir: str | None, split: str, show: int, vocabulary=None,
             out=sys.stdout) -> int:
  """Prints the split's size and first `show` examples; returns the size."""
  from restem_jax.tasks import base, benchmarks  # pylint: disable=import-outside-toplevel

  if name in benchmarks.FACTORIES:
    benchmarks.make_task(name, data_dir, vocabulary)
  spec = base.get(name)
  problems = base.load_problems(name, split)
  print(f"{name} [{split}]: {len(problems)} examples; stop strings {list(spec.stop_strings)}",
        file=out)
  for p in problems[:show]:
    print(f"\n===== {p.id} : inputs =====", file=out)
    if vocabulary is not None:
      print(f"({len(vocabulary.encode(p.prompt))} tokens)", file=out)
    print(p.prompt, end="", file=out)
    print("\u2038<<< the model continues here", file=out)
    print(f"----- {p.id} : targets -----", file=out)
    print(p.reference if p.reference is not None else "(no reference solution)", file=out)
  return len(problems)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.task:
    raise app.UsageError("--task is required, e.g. --task=restem_math")
  import restem_jax.tasks  # noqa: F401  pylint: disable=import-outside-toplevel
  from restem_jax.tasks import readers  # pylint: disable=import-outside-toplevel
  vocabulary = None
  if f.vocabulary:
    from restem_jax.checkpoint_io.vocabularies import vocabulary_for  # pylint: disable=import-outside-toplevel
    vocabulary = vocabulary_for(f.vocabulary)
  try:
    describe(f.task, f.data_dir, f.split, f.show, vocabulary)
  except (readers.DatasetMissingError, readers.MalformedRecordError, KeyError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
