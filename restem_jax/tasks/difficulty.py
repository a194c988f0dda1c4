r"""Difficulty bins by the base model's solve rate, for the difficulty ablation.

  python -m restem_jax.tasks.difficulty --samples=RUN/iter_1/samples --out=BINS \
      [--edges=0,0.25,0.5,0.75,1]

Reads E-step sample files (JSONL with `problem_id` and `reward`; a directory of
shards or one file), computes each problem's solve rate (mean reward over its
samples), and writes BINS/bin_<k>.txt (ids with rate in [edge_k, edge_k+1),
the last bin closed) and BINS/bins.json. Use a bin as training set with
`make_math_task.train_ids_file` (gin_configs/ablations/difficulty_bin.gin).
The paper bins by solve rate at T=1.0; iteration 1's E-step samples the base
model at the E-step temperature (0.7) -- sample at 1.0 for the paper's bins.
"""

from __future__ import annotations

import collections
import glob
import json
import os
from typing import Sequence

from absl import app, flags

from restem_jax.tasks import readers


def solve_rates(path: str) -> dict[str, float]:
  """Per-problem mean reward over every sample file under `path` (or in the file)."""
  files = sorted(glob.glob(os.path.join(path, "*.jsonl"))) if os.path.isdir(path) else [path]
  if not files:
    raise FileNotFoundError(f"no *.jsonl sample files under {path}")
  total, count = collections.defaultdict(float), collections.Counter()
  for name in files:
    for lineno, row in readers.read_jsonl(name):
      if isinstance(row, dict) and set(row) == {"_end"}:
        continue  # A samples file's closing count and digest (restem/e_step.py).
      if not isinstance(row, dict) or "problem_id" not in row or "reward" not in row:
        raise readers.MalformedRecordError(f"{name}:{lineno}: needs 'problem_id' and 'reward'")
      total[str(row["problem_id"])] += float(row["reward"])
      count[str(row["problem_id"])] += 1
  return {pid: total[pid] / count[pid] for pid in count}


def bin_ids(rates: dict[str, float], edges: Sequence[float]) -> list[list[str]]:
  edges = list(edges)
  if len(edges) < 2 or edges != sorted(edges):
    raise ValueError(f"edges {edges} must be at least two increasing numbers")
  bins: list[list[str]] = [[] for _ in edges[:-1]]
  for pid, rate in rates.items():
    for k in range(len(bins)):
      last = k == len(bins) - 1
      if edges[k] <= rate < edges[k + 1] or (last and rate == edges[-1]):
        bins[k].append(pid)
        break
  return [sorted(b, key=readers._natural_key) for b in bins]  # pylint: disable=protected-access


def write_bins(samples: str, out: str, edges: Sequence[float]) -> list[list[str]]:
  bins = bin_ids(solve_rates(samples), edges)
  os.makedirs(out, exist_ok=True)
  for k, ids in enumerate(bins):
    with open(os.path.join(out, f"bin_{k}.txt"), "w") as f:
      f.writelines(i + "\n" for i in ids)
  with open(os.path.join(out, "bins.json"), "w") as f:
    json.dump({"edges": list(edges), "counts": [len(b) for b in bins], "samples": samples},
              f, indent=1)
  return bins


def _define_flags() -> None:
  flags.DEFINE_string("samples", None, "E-step samples: a shard directory or a JSONL.")
  flags.DEFINE_string("out", None, "Where bin_<k>.txt and bins.json are written.")
  flags.DEFINE_list("edges", ["0", "0.25", "0.5", "0.75", "1"], "Solve-rate bin edges.")


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  if not f.samples or not f.out:
    raise app.UsageError("--samples and --out are required")
  bins = write_bins(f.samples, f.out, [float(e) for e in f.edges])
  print({f"bin_{k}": len(b) for k, b in enumerate(bins)})


if __name__ == "__main__":
  _define_flags()
  app.run(main)
