"""Peak resident memory of a command, with a timeline to see which stage set it.

Runs the command (e.g. the whole loop), samples the RSS of its process and
of all its descendants every --interval seconds from /proc, and echoes the
command's output lines prefixed with elapsed time and current RSS, so a peak
can be tied to the stage that printed last. Prints the peaks (own, and the
whole tree) and the wall time; --json writes them with the timeline.

  python benchmarks/bench_memory.py --json=/tmp/mem.json -- \
      python -m restem_jax.main --gin_file=gin_configs/smollm2_135m_restem.gin --workdir=/tmp/w
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from absl import app, flags

_INTERVAL = flags.DEFINE_float("interval", 0.25, "Seconds between RSS samples.")
_JSON = flags.DEFINE_string("json", None, "Write peaks and the timeline here.")
_QUIET = flags.DEFINE_bool("quiet", False, "Do not echo the command's output.")


def _rss_kb(pid: int) -> int:
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1])
  except (FileNotFoundError, ProcessLookupError):
    pass
  return 0


def _children(pid: int) -> list[int]:
  out = []
  try:
    for tid in os.listdir(f"/proc/{pid}/task"):
      with open(f"/proc/{pid}/task/{tid}/children") as f:
        out.extend(int(c) for c in f.read().split())
  except (FileNotFoundError, ProcessLookupError):
    pass
  return out


def _tree_kb(pid: int) -> int:
  total, todo = 0, [pid]
  while todo:
    p = todo.pop()
    total += _rss_kb(p)
    todo.extend(_children(p))
  return total


def main(argv: list[str]) -> None:
  command = argv[1:]
  if not command:
    raise app.UsageError("give the command after --, e.g. -- python -m restem_jax.main ...")
  load_before = os.getloadavg()
  start = time.time()
  proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1)
  peak = {"own_mb": 0.0, "tree_mb": 0.0, "own_at_s": 0.0, "last_line_at_own_peak": ""}
  timeline: list[tuple[float, float, float]] = []
  last_line = [""]

  def sample() -> None:
    while proc.poll() is None:
      own, tree = _rss_kb(proc.pid) / 1024, _tree_kb(proc.pid) / 1024
      t = time.time() - start
      timeline.append((round(t, 2), round(own, 1), round(tree, 1)))
      if own > peak["own_mb"]:
        peak.update(own_mb=own, own_at_s=t, last_line_at_own_peak=last_line[0])
      peak["tree_mb"] = max(peak["tree_mb"], tree)
      time.sleep(_INTERVAL.value)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  for line in proc.stdout:
    # tqdm redraws with carriage returns; the last segment is the current state.
    last_line[0] = line.rstrip("\n").split("\r")[-1][-200:]
    if not _QUIET.value:
      t = time.time() - start
      print(f"[{t:8.1f}s {_rss_kb(proc.pid) / 1024:7.0f} MB] {last_line[0]}", flush=True)
  proc.wait()
  sampler.join()
  wall = time.time() - start
  result = {"command": command, "returncode": proc.returncode, "wall_s": round(wall, 1),
            "load_before": load_before, **{k: round(v, 1) if isinstance(v, float) else v
                                               for k, v in peak.items()}}
  print(json.dumps(result, indent=1))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({**result, "timeline": timeline}, f)
  sys.exit(proc.returncode)


if __name__ == "__main__":
  app.run(main)
