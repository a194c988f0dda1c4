"""Batch scoring in a pool of killable worker processes.

Each worker scores one item at a time; a dispatcher thread per worker sends it
items and SIGKILLs and replaces it if an item overruns its deadline (a hung
sympy call, a stuck harness), scoring that item 0. Results come back in input
order. `submit` returns a Future, so the loop can keep sampling meanwhile.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Any, Mapping, Sequence

import tqdm

from restem_jax.rewards import sandbox as sandbox_lib
from restem_jax.rewards import scoring
from restem_jax.rewards.framing import read_frame, write_frame

_log = logging.getLogger(__name__)
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class RewardInputError(ValueError):
  """A problem record could not be scored (missing fields, bad tests).

  `index` is the failing item's position in the batch, so a caller that knows
  which problem each item came from can name it.
  """

  def __init__(self, message: str, index: int | None = None):
    super().__init__(message)
    self.index = index


@dataclasses.dataclass
class ScoredItem:
  reward: float
  result: str  # "passed", "failed: ...", "timed out"


class _Batch:

  def __init__(self, n: int, progress: bool, desc: str):
    self.items: list[ScoredItem | None] = [None] * n
    self.left = n
    self.error: Exception | None = None
    self.future: concurrent.futures.Future = concurrent.futures.Future()
    self.bar = tqdm.tqdm(total=n, disable=not progress, desc=desc)
    self.lock = threading.Lock()

  def finish_item(self, index: int, item: ScoredItem | None,
                  error: str | None) -> None:
    with self.lock:
      if error is not None and self.error is None:
        self.error = RewardInputError(f"item {index}: {error}", index)
      self.items[index] = item
      self.left -= 1
      self.bar.update(1)
      if self.left:
        return
      self.bar.close()
    # The client may cancel at any moment, also between a check and the
    # delivery (the server cancels when its client leaves); a cancelled future
    # refuses a result, which must not end this worker's feeding thread.
    with contextlib.suppress(concurrent.futures.InvalidStateError):
      if self.error is not None:
        self.future.set_exception(self.error)
      else:
        self.future.set_result(self.items)


class _Worker:
  """One worker process plus the thread that feeds it."""

  def __init__(self, pool: "RewardPool"):
    self.pool = pool
    self.proc: subprocess.Popen | None = None
    self.tmp: str | None = None
    self.thread = threading.Thread(target=self._loop, daemon=True)
    self.thread.start()

  def _spawn(self) -> None:
    # The worker's temporary files (its sandbox's root) live in a directory
    # this side removes: a SIGKILLed worker cannot clean up after itself.
    self.tmp = tempfile.mkdtemp(prefix="restem_worker_")
    os.chmod(self.tmp, 0o711)  # Sandboxed programs of another uid pass through it.
    env = dict(os.environ, TMPDIR=self.tmp)
    env["PYTHONPATH"] = os.pathsep.join(
        [_PACKAGE_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "restem_jax.rewards.worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        start_new_session=True)  # so one killpg also ends its sandbox
    write_frame(self.proc.stdin.fileno(), self.pool._worker_config)

  def _kill(self) -> None:
    if self.proc is None:
      return
    try:
      os.killpg(self.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    self.proc.wait()
    self.proc.stdin.close()
    self.proc.stdout.close()
    self.proc = None
    shutil.rmtree(self.tmp, ignore_errors=True)
    self.tmp = None

  def _score(self, job: tuple, timeout: float) -> tuple[Any, str]:
    if self.proc is None or self.proc.poll() is not None:
      self._kill()
      self._spawn()
    ready = []
    try:
      write_frame(self.proc.stdin.fileno(), job)
      ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
      if ready:
        reply = read_frame(self.proc.stdout.fileno())
        if reply is not None:
          return reply
    except (OSError, EOFError):
      pass
    self._kill()
    if not ready:
      return 0.0, f"timed out: scoring exceeded {timeout:g}s"
    return 0.0, "failed: worker died"

  def _loop(self) -> None:
    while True:
      entry = self.pool._queue.get()
      if entry is None:
        self._kill()
        return
      batch, index, task, problem, completion = entry
      # The batch already failed on bad input, or its caller cancelled it.
      if batch.error is not None or batch.future.cancelled():
        batch.finish_item(index, None, None)
        continue
      timeout = scoring.deadline(task, problem, self.pool.options)
      reward, result = self._score((task, problem, completion), timeout)
      if reward is None:
        batch.finish_item(index, None, result)
      else:
        batch.finish_item(index, ScoredItem(float(reward), result), None)


class RewardPool:
  """Scores completions in worker processes; see `submit`."""

  def __init__(self, num_workers: int | None = None, *,
               options: scoring.TaskOptions = scoring.TaskOptions(),
               limits: sandbox_lib.SandboxLimits = sandbox_lib.SandboxLimits(),
               backend: str | None = None):
    """`backend`: a sandbox backend name (see sandbox.py); by default
    RESTEM_SANDBOX_BACKEND, else the strongest that works here."""
    self.num_workers = num_workers or len(os.sched_getaffinity(0))
    self.options = options
    self.backend = sandbox_lib.select_backend(backend)
    self.isolation = sandbox_lib.isolation_description(self.backend)
    _log.warning("restem_jax.rewards: %d workers; code sandbox isolation: %s",
                 self.num_workers, self.isolation)
    if self.backend == "none" and options.allow_unsandboxed:
      _log.warning("restem_jax.rewards: allow_unsandboxed is on: code rewards "
                   "run model-written programs WITHOUT a sandbox")
    self._worker_config = {"limits": limits, "options": options,
                           "backend": self.backend}
    self._queue: queue.Queue = queue.Queue()
    self._workers = [_Worker(self) for _ in range(self.num_workers)]
    self._closed = False

  def submit(self, task: str, problems: Sequence[Mapping[str, Any]],
             completions: Sequence[str], *, progress: bool = True
             ) -> concurrent.futures.Future:
    """Future of list[ScoredItem] in input order; returns at once.

    Cancelling the future skips the batch's items that have not started.
    Code tasks raise SandboxUnavailableError here, before any item runs, where
    no sandbox works and `options.allow_unsandboxed` is off.
    """
    scoring.check_task(task)
    if task in scoring.CODE_TASKS:
      sandbox_lib.check_allowed(self.backend, self.options.allow_unsandboxed)
    if self._closed:
      raise RuntimeError("RewardPool is closed")
    if len(problems) != len(completions):
      raise ValueError(f"{len(problems)} problems but {len(completions)} "
                       "completions")
    batch = _Batch(len(problems), progress, f"rewards[{task}]")
    if not problems:
      batch.bar.close()
      batch.future.set_result([])
    for i, (problem, completion) in enumerate(zip(problems, completions)):
      self._queue.put((batch, i, task, dict(problem), completion))
    return batch.future

  def score(self, task: str, problems: Sequence[Mapping[str, Any]],
            completions: Sequence[str], *, progress: bool = True
            ) -> list[float]:
    items = self.submit(task, problems, completions, progress=progress).result()
    return [item.reward for item in items]

  def close(self) -> None:
    if self._closed:
      return
    self._closed = True
    for _ in self._workers:
      self._queue.put(None)
    for worker in self._workers:
      worker.thread.join()

  def __enter__(self) -> "RewardPool":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


# By worker count and the sandbox backend forced when the pool started (RESTEM_SANDBOX_BACKEND):
# forcing another later gets a pool with that backend, not the one already running.
_default_pools: dict[tuple[int | None, str | None], RewardPool] = {}
_default_options = scoring.TaskOptions()
_default_lock = threading.Lock()


def default_pool(num_workers: int | None = None) -> RewardPool:
  """A shared pool per worker count, started on first use, closed at exit."""
  with _default_lock:
    key = (num_workers, os.environ.get(sandbox_lib.BACKEND_ENV))
    if key not in _default_pools:
      _default_pools[key] = RewardPool(num_workers, options=_default_options)
    return _default_pools[key]


def set_default_options(options: scoring.TaskOptions) -> None:
  """The options of the shared pools (`score_batch`, `get_reward`); pools
  started with others are closed, so the next call starts one with these."""
  global _default_options
  with _default_lock:
    if options == _default_options:
      return
    _default_options = options
    stale = list(_default_pools.values())
    _default_pools.clear()
  for pool in stale:
    pool.close()


@atexit.register
def _close_default_pools() -> None:
  for pool in _default_pools.values():
    pool.close()
