"""Runs N JAX processes on localhost (CPU devices), as the hosts of a pod would run.

Each process gets XLA_FLAGS and JAX_PLATFORMS before JAX starts. A failed
worker leaves its siblings waiting in a collective, so every launch has a
deadline, and the whole group is killed when one fails or time runs out.
"""

import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICRO = os.path.join(ROOT, "tests", "micro.gin")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env(devices: int) -> dict:
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def distributed_flags(port: int, n: int, i: int) -> list[str]:
  return ["--distributed", f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={n}",
          f"--process_id={i}"]


def micro_loop_args(workdir: str, port: int | None = None, n: int = 1, extra=()):
  """`args_of` for `start`: the micro loop, as process i of n (one plain process if n is 1)."""
  def args(i):
    distributed = distributed_flags(port, n, i) if n > 1 else []
    return ["-m", "restem_jax.main", f"--gin_file={MICRO}", f"--workdir={workdir}", *distributed,
            *extra]
  return args


def start(args_of, n: int, devices: int, logdir: str) -> list[subprocess.Popen]:
  """Starts `python <args_of(i)>` for i < n, each in its own process group."""
  procs = []
  for i in range(n):
    log = open(os.path.join(logdir, f"process_{i}.log"), "w")  # pylint: disable=consider-using-with
    procs.append(subprocess.Popen([sys.executable, *args_of(i)], cwd=ROOT, env=env(devices),
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
  return procs


def kill(procs) -> None:
  for p in procs:
    if p.poll() is None:
      os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def wait(procs, deadline_s: float, logdir: str, until=None) -> list[int]:
  """Waits for all to exit (or for `until()` to hold, then kills them); returns exit codes.

  A worker that fails gets its siblings killed after a short grace; past the
  deadline everyone is killed and an AssertionError carries the logs' tails.
  """
  end = time.time() + deadline_s
  failed_at = None
  while time.time() < end:
    codes = [p.poll() for p in procs]
    if until is not None and until():
      kill(procs)
      return [p.returncode for p in procs]
    if all(c is not None for c in codes):
      return codes
    if failed_at is None and any(c not in (None, 0) for c in codes):
      failed_at = time.time()
    if failed_at is not None and time.time() - failed_at > 60:
      break  # The siblings of a failed worker would wait in a collective forever.
    time.sleep(0.1)
  kill(procs)
  raise AssertionError("workers did not finish:\n" + tails(logdir, len(procs)))


def tails(logdir: str, n: int, chars: int = 3000) -> str:
  out = []
  for i in range(n):
    with open(os.path.join(logdir, f"process_{i}.log"), errors="replace") as f:
      out.append(f"--- process {i} ---\n" + f.read()[-chars:])
  return "\n".join(out)
