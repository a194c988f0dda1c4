"""Score JSONL samples, human-eval style.

  python -m restem_jax.rewards.evaluate --task=humaneval \
      --problems=HumanEval.jsonl.gz --samples=samples.jsonl --k=1,10,100 \
      [--allow_unsandboxed]

Reads samples {"task_id", "completion"}, writes SAMPLES_results.jsonl (each
sample plus "passed" and "result"), prints pass@k as JSON. Only the problems
that samples refer to are scored.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
import json
import sys
from typing import Any, Iterator

from restem_jax.restem.metrics import pass_at_k
from restem_jax.rewards import scoring
from restem_jax.rewards.batch import RewardPool
from restem_jax.rewards.sandbox import SandboxUnavailableError


class InputError(ValueError):
  """Bad input file; the message names the file and line."""


def read_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
  """(1-based line number, record) for each non-blank line of a (gzipped) file."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rt", encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise InputError(f"{path}:{lineno}: malformed JSON: {e}") from e
        if not isinstance(record, dict):
          raise InputError(f"{path}:{lineno}: expected a JSON object")
        yield lineno, record
  except OSError as e:
    raise InputError(f"cannot read {path}: {e}") from e


def problem_id(record: dict[str, Any], index: int) -> str:
  """task_id if present, else problem_id, else the 0-based record index."""
  for key in ("task_id", "problem_id"):
    if record.get(key) is not None:
      return str(record[key])
  return str(index)


def load_problems(path: str) -> dict[str, dict[str, Any]]:
  problems: dict[str, dict[str, Any]] = {}
  for index, (lineno, record) in enumerate(read_jsonl(path)):
    pid = problem_id(record, index)
    if pid in problems:
      raise InputError(f"{path}:{lineno}: duplicate problem id {pid!r}")
    problems[pid] = record
  return problems


def pass_at_ks(passed_by_problem: dict[str, list[bool]],
               ks: list[int]) -> dict[str, float]:
  """Mean unbiased pass@k, for each k every problem has >= k samples for."""
  counts = [(len(v), sum(v)) for v in passed_by_problem.values()]
  return {f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
          for k in ks if counts and all(n >= k for n, _ in counts)}


def evaluate(task: str, problems_path: str, samples_path: str, ks: list[int],
             num_workers: int | None = None,
             options: scoring.TaskOptions = scoring.TaskOptions(),
             progress: bool = True) -> dict[str, float]:
  scoring.check_task(task)
  problems = load_problems(problems_path)
  samples = []
  for lineno, sample in read_jsonl(samples_path):
    for key in ("task_id", "completion"):
      if key not in sample:
        raise InputError(f"{samples_path}:{lineno}: sample has no {key!r}")
    if str(sample["task_id"]) not in problems:
      raise InputError(f"{samples_path}:{lineno}: unknown problem id "
                       f"{sample['task_id']!r} (not in {problems_path})")
    if not isinstance(sample["completion"], str):
      raise InputError(f"{samples_path}:{lineno}: 'completion' must be a string")
    samples.append(sample)
  with RewardPool(num_workers, options=options) as pool:
    items = pool.submit(task, [problems[str(s["task_id"])] for s in samples],
                        [s["completion"] for s in samples],
                        progress=progress).result()
  passed_by_problem: dict[str, list[bool]] = collections.defaultdict(list)
  out_path = samples_path + "_results.jsonl"
  with open(out_path, "w", encoding="utf-8") as f:
    for sample, item in zip(samples, items):
      passed = item.reward == 1.0
      passed_by_problem[str(sample["task_id"])].append(passed)
      f.write(json.dumps(dict(sample, passed=passed, result=item.result)) + "\n")
  print(f"Wrote {out_path}", file=sys.stderr)
  return pass_at_ks(passed_by_problem, ks)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--task", required=True, choices=scoring.TASKS)
  parser.add_argument("--problems", required=True,
                      help="dataset file (.jsonl or .jsonl.gz)")
  parser.add_argument("--samples", required=True, help="samples .jsonl")
  parser.add_argument("--k", default="1,10,100", help="comma-separated ks")
  parser.add_argument("--num_workers", type=int, default=None)
  parser.add_argument("--timeout", type=float, default=None,
                      help="per program (humaneval) / per test (apps) / per "
                      "check (math, gsm8k), seconds")
  parser.add_argument("--no_progress", action="store_true")
  parser.add_argument("--allow_unsandboxed", action="store_true",
                      help="run apps/humaneval programs even where no sandbox "
                      "backend works (unsafe); without it they refuse")
  args = parser.parse_args(argv)
  try:
    ks = [int(k) for k in args.k.split(",") if k.strip()]
  except ValueError:
    parser.error(f"--k must be comma-separated integers, got {args.k!r}")
  options = scoring.TaskOptions(allow_unsandboxed=args.allow_unsandboxed)
  if args.timeout is not None:
    options = dataclasses.replace(options, humaneval_timeout=args.timeout,
                                  apps_timeout=args.timeout,
                                  math_timeout=args.timeout)
  try:
    result = evaluate(args.task, args.problems, args.samples, ks,
                      args.num_workers, options, not args.no_progress)
  except (InputError, ValueError, SandboxUnavailableError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
