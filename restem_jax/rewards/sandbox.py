"""Host side of the code sandbox: starts and talks to the in-sandbox fork server.

Backends, one module each behind one interface (`problem`, `description`,
`launch`), strongest first; the first whose probe passes on this machine is
used unless one is forced (`Sandbox(backend=...)`, `RewardPool(backend=...)`
or RESTEM_SANDBOX_BACKEND=bwrap|landlock|none):
  * bwrap (sandbox_bwrap.py): namespaces and a minimal read-only filesystem.
  * landlock (sandbox_landlock.py, confine.py): Landlock filesystem rules and a
    seccomp filter, for machines where bubblewrap cannot run.
  * none: no filesystem or network isolation. Code rewards refuse it unless
    the caller opts out (`allow_unsandboxed`).
On every backend: a fresh working directory per program (removed afterwards),
an empty environment, rlimits (CPU, address space, file size, open files,
processes), its own process group killed with SIGKILL at the deadline, and,
when we are root, an unprivileged uid of its own so that the process limit
binds and a kill-by-uid sweep reaches processes that left the group; programs
start from a spawner that never held a request, and the HumanEval verdict is
decided in a separate judge process (zygote.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from typing import Any

from restem_jax.rewards import sandbox_bwrap, sandbox_landlock
from restem_jax.rewards import sandbox_paths as paths

BACKEND_ENV = "RESTEM_SANDBOX_BACKEND"
# Distinct uids per live sandbox on this host: the process limit and the
# kill-by-uid sweep are per uid, so two sandboxes must never share one.
_UID_BASE = 200_000
_counter = itertools.count()
_log = logging.getLogger(__name__)
_announced = False


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
  """Per-program resource limits (the CPU limit follows each run's timeout)."""
  address_space: int = 4 << 30
  file_size: int = 16 << 20
  open_files: int = 64
  processes: int = 32


class _Unconfined:
  """The "none" backend: the fork server as a plain child process."""
  NAME = "none"

  @staticmethod
  def problem() -> str:
    return ""

  @staticmethod
  def description() -> str:
    return ("UNSANDBOXED: no backend, network and filesystem are NOT isolated "
            "(install bubblewrap: apt-get install -y bubblewrap)")

  @staticmethod
  def launch(host_root: str, cfg: dict[str, Any]) -> list[str]:
    return [sys.executable, "-I", paths.ZYGOTE, json.dumps(dict(cfg, root=host_root))]


_BACKENDS = {b.NAME: b for b in (sandbox_bwrap, sandbox_landlock, _Unconfined)}
BACKENDS = tuple(_BACKENDS)  # strongest first


class SandboxUnavailableError(RuntimeError):
  """No isolation for model-written programs, and no explicit opt-out; or a
  forced backend that does not work here. The message says what to do."""


def backend_problem(name: str) -> str:
  """'' if backend `name` works on this machine (probed once per process), else why not."""
  return _backend(name).problem()


def select_backend(requested: str | None = None) -> str:
  """`requested`, else RESTEM_SANDBOX_BACKEND, else the strongest that works.

  A forced backend that does not work here raises SandboxUnavailableError.
  """
  requested = requested or os.environ.get(BACKEND_ENV) or None
  if requested is not None and requested != "auto":
    problem = backend_problem(requested)
    if problem:
      raise SandboxUnavailableError(
          f"sandbox backend {requested!r} was asked for but does not work here: {problem}")
    return requested
  return next(name for name in BACKENDS if not backend_problem(name))


def isolation_description(backend: str | None = None) -> str:
  """One line naming the backend and what it isolates on this host."""
  backend = select_backend(backend)
  uid = ("unprivileged per-sandbox uid" if os.geteuid() == 0 else
         "current uid (not root: no uid drop, process limit counts all its "
         "processes)")
  base = f"rlimits + process-group kill + {uid} + fresh temp dir + empty env"
  return f"{backend}: {_BACKENDS[backend].description()} + {base}"


def refusal() -> str:
  """The one line that says why code rewards will not run here, and the ways out."""
  why = "; ".join(f"{name}: {backend_problem(name)}" for name in BACKENDS[:-1]
                  if backend_problem(name)) or f"{BACKEND_ENV}=none"
  return ("restem_jax.rewards: refusing to run model-written programs without a "
          f"sandbox ({why}). Install bubblewrap (apt-get install -y bubblewrap; "
          "in a container it also needs user namespaces) or use a Linux kernel "
          "with Landlock (5.13+), or opt out explicitly: --allow_unsandboxed "
          "(rewards.evaluate), --gin.run.allow_unsandboxed=True (training), "
          "TaskOptions(allow_unsandboxed=True) (API).")


def check_allowed(backend: str, allow_unsandboxed: bool) -> None:
  """Raises SandboxUnavailableError for the "none" backend without the opt-out."""
  if _backend(backend) is _Unconfined and not allow_unsandboxed:
    raise SandboxUnavailableError(refusal())


def _backend(name: str) -> Any:
  if name not in _BACKENDS:
    raise ValueError(f"unknown sandbox backend {name!r}; expected one of "
                     f"{BACKENDS} (or 'auto')")
  return _BACKENDS[name]


class SandboxError(RuntimeError):
  """The fork server died or stopped answering."""


class Sandbox:
  """A fork server confined by the strongest isolation available.

  Not thread-safe: each worker process owns one. `run` sends one program and
  blocks until the server has finished, killed and cleaned up after it.
  """

  def __init__(self, limits: SandboxLimits = SandboxLimits(),
               backend: str | None = None, allow_unsandboxed: bool = False):
    self.limits = limits
    # A named backend is not probed again: one that fails here fails to start
    # (SandboxError), which scores 0 rather than running anything unconfined.
    self.backend = select_backend() if backend is None else _backend(backend).NAME
    check_allowed(self.backend, allow_unsandboxed)
    self.uid = _UID_BASE + ((os.getpid() % 1_000_000) * 16 +
                            next(_counter) % 16)
    self.host_root: str | None = None
    self._proc: subprocess.Popen | None = None
    self._lock = threading.Lock()
    global _announced
    if not _announced:
      _announced = True
      log = _log.warning if self.backend == "none" else _log.info
      log("restem_jax.rewards sandbox isolation: %s", self.isolation)

  @property
  def isolation(self) -> str:
    return isolation_description(self.backend)

  def _start(self) -> None:
    self.host_root = tempfile.mkdtemp(prefix="restem_sandbox_")
    os.chmod(self.host_root, 0o711)  # children may enter their own run dir only
    cfg = {"uid": self.uid, "gid": self.uid,
           "limits": dataclasses.asdict(self.limits)}
    argv = _BACKENDS[self.backend].launch(self.host_root, cfg)
    self._proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env=paths.clean_env(), cwd=self.host_root,
        start_new_session=True, pass_fds=())
    self._call({"op": "ping"}, timeout=60)

  def _call(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    assert self._proc is not None and self._proc.stdin and self._proc.stdout
    body = json.dumps(req).encode()
    reader_result: list[Any] = []

    def read() -> None:
      try:
        n = struct.unpack(">I", _read_exact(self._proc.stdout, 4))[0]
        reader_result.append(json.loads(_read_exact(self._proc.stdout, n)))
      except Exception as e:  # reported below as a dead server
        reader_result.append(e)

    try:
      self._proc.stdin.write(struct.pack(">I", len(body)) + body)
      self._proc.stdin.flush()
    except OSError as e:
      self._kill()
      raise SandboxError(f"sandbox server is gone: {e}") from e
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive() or not reader_result or isinstance(
        reader_result[0], Exception):
      self._kill()
      raise SandboxError(f"sandbox server failed: {reader_result or 'timeout'}")
    return reader_result[0]

  def run(self, op: str, timeout: float, **fields: Any) -> dict[str, Any]:
    """Runs one program; see zygote.py for the ops and the reply fields."""
    with self._lock:
      if self._proc is None or self._proc.poll() is not None:
        self._kill()
        self._start()
      # The server enforces `timeout`; this margin only catches a dead server.
      return self._call(dict(fields, op=op, timeout=timeout), timeout + 30)

  def _kill(self) -> None:
    if self._proc is not None:
      try:
        os.killpg(self._proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      self._proc.wait()
      for stream in (self._proc.stdin, self._proc.stdout):
        stream.close()
      self._proc = None
    if self.host_root is not None:
      shutil.rmtree(self.host_root, ignore_errors=True)
      self.host_root = None

  def close(self) -> None:
    with self._lock:
      self._kill()

  def __enter__(self) -> "Sandbox":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def _read_exact(stream: Any, n: int) -> bytes:
  data = stream.read(n)
  if data is None or len(data) != n:
    raise EOFError("sandbox server closed its pipe")
  return data
