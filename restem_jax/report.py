r"""The paper's figures and a table for any set of ReST^EM runs, finished or not.

  python -m restem_jax.report WORKDIR [WORKDIR ...] --out=DIR [--labels=A,B,...]

Reads each workdir's stage files (iter_<i>/metrics.json, control/metrics.json,
restem_jax.transfer's results under it) and config.gin, and writes DIR/report.md
with PNGs beside it: test pass@1 per iteration, the train/test gap, pass@k and
maj@k of the base and the best iteration, the runs side by side, gains by
difficulty bin and transfer results where the runs have them. Runs are labelled
by the result-determining bindings that differ between their config.gin files
(e.g. `RestemConfig.num_samples=8`); `--labels` names them instead. See
docs/report.md.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from absl import app, flags

from restem_jax.checkpoint_io import files
from restem_jax.restem import comparison, runs


def _define_flags() -> None:
  """CLI flags, defined only when run as a program (tests import `report`)."""
  flags.DEFINE_string("out", None, "Directory for report.md and its PNGs (created).")
  flags.DEFINE_list("labels", None, "One name per workdir, in order, instead of the "
                    "differing bindings (comma-separated, so no commas inside a name).")


def report(workdirs: Sequence[str], out: str, labels: Sequence[str] | None = None) -> str:
  """Writes `out`/report.md and its figures for `workdirs`; returns the report's text."""
  return comparison.write_report(runs.load_runs(workdirs, labels), out)


def main(argv: Sequence[str]) -> None:
  f = flags.FLAGS
  if len(argv) < 2:
    raise app.UsageError("give at least one WORKDIR (a --workdir of restem_jax.main)")
  if not f.out:
    raise app.UsageError("--out is required: the directory for report.md and the figures")
  try:
    report(argv[1:], f.out, f.labels)
  except (runs.ReportError, files.DamagedFileError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  print(f"wrote {os.path.join(f.out, comparison.REPORT)}", flush=True)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
