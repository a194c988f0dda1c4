"""Memory a checkpoint save holds, by Orbax's save_concurrent_gb and glibc's arena limit.

Each setting runs in its own process: a tree of float32 arrays of --state_mb
is saved three times with `checkpoints.save` (its Orbax checkpointer
rebuilt with the setting), RSS sampled every 10 ms. Reports the peak during
the saves and RSS after them, both relative to before, and the save times.

  python benchmarks/bench_save_memory.py --concurrent_gb=96,0.25 --arenas=0,2
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags

_CONCURRENT = flags.DEFINE_list("concurrent_gb", ["96", "0.25"],
                                "Orbax save_concurrent_gb values (96 is Orbax's default).")
_ARENAS = flags.DEFINE_list("arenas", ["0", "2"], "glibc M_ARENA_MAX values (0: glibc's default).")
_STATE_MB = flags.DEFINE_integer("state_mb", 1440, "Size of the saved tree.")
_ONE = flags.DEFINE_string("one", None, "Internal: 'concurrent_gb,arenas' for a child run.")


def _rss_mb() -> int:
  with open("/proc/self/status") as f:
    return int(f.read().split("VmRSS:")[1].split()[0]) // 1024


def _measure(concurrent_gb: float, arenas: int) -> dict:
  libc = ctypes.CDLL("libc.so.6")
  libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD, as restem_jax.main sets it
  if arenas:
    libc.mallopt(-8, arenas)  # M_ARENA_MAX
  # pylint: disable=import-outside-toplevel
  import jax
  import orbax.checkpoint as ocp
  from restem_jax.checkpoint_io import checkpoints
  standard = ocp.StandardCheckpointer
  checkpoints.ocp.StandardCheckpointer = lambda **_: standard(save_concurrent_gb=concurrent_gb)
  rows = max(1, _STATE_MB.value * (1 << 20) // (2048 * 2304 * 4))
  key = jax.random.PRNGKey(0)
  tree = [jax.random.normal(jax.random.fold_in(key, i), (2048, 2304)) for i in range(rows)]
  jax.block_until_ready(tree)
  before, peak, stop = _rss_mb(), [0], threading.Event()

  def watch():
    while not stop.is_set():
      peak[0] = max(peak[0], _rss_mb())
      time.sleep(0.01)

  watcher = threading.Thread(target=watch)
  watcher.start()
  path, times = tempfile.mkdtemp(), []
  for _ in range(3):
    shutil.rmtree(path, ignore_errors=True)
    start = time.time()
    checkpoints.save(path, tree)
    times.append(round(time.time() - start, 2))
  stop.set()
  watcher.join()
  shutil.rmtree(path, ignore_errors=True)
  return {"concurrent_gb": concurrent_gb, "arenas": arenas,
          "state_mb": sum(x.nbytes for x in tree) >> 20, "peak_extra_mb": peak[0] - before,
          "after_extra_mb": _rss_mb() - before, "save_s": times}


def main(argv):
  del argv
  if _ONE.value:
    concurrent_gb, arenas = _ONE.value.split(",")
    print(json.dumps(_measure(float(concurrent_gb), int(arenas))))
    return
  print("load average:", os.getloadavg())
  for concurrent_gb, arenas in itertools.product(_CONCURRENT.value, _ARENAS.value):
    out = subprocess.run([sys.executable, __file__, f"--one={concurrent_gb},{arenas}",
                          f"--state_mb={_STATE_MB.value}"], capture_output=True, text=True,
                         check=True)
    print(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
  app.run(main)
