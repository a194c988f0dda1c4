"""In-sandbox program server: forks one short-lived, unprivileged child per program.

This file runs as a script inside the sandbox (under bubblewrap when available),
started by `sandbox.Sandbox`. It must stay standard-library only and must not
import the rest of the package: the sandbox only sees this directory read-only.

Why a fork server: starting a Python interpreter costs 15-80 ms, forking a warm
one about 1 ms, and a program's own run time is often less than either.

Trust model: this server is trusted, its children are not. A child drops to an
unprivileged uid before any untrusted code runs, so it cannot signal, ptrace or
write to this server, and everything it reports is checked here (HumanEval) or
on the host (APPS outputs). The server never holds expected outputs, so a child,
which inherits a copy of the server's memory, cannot read them.

Protocol on fds 0/1: 4-byte big-endian length + UTF-8 JSON, one request, one
response, in lock step.
"""

import builtins
import ctypes
import json
import os
import resource
import secrets
import select
import shutil
import signal
import struct
import sys
import time
import traceback

_RESULT_FD = 3  # where a child writes its structured result
_MAX_CAPTURE = 8 << 20  # bytes of stdout/stderr kept per program
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
# Imported once here so children need not read them from disk: faster, and
# the only way they work when the interpreter lives in a directory the
# unprivileged uid cannot enter (e.g. pyenv under /root without bubblewrap).
_PRELOAD = ("abc", "array", "bisect", "calendar", "cmath", "collections",
            "contextlib", "copy", "dataclasses", "datetime", "decimal",
            "enum", "fractions", "functools", "hashlib", "heapq", "io",
            "itertools", "json", "math", "numbers", "operator", "queue",
            "random", "re", "statistics", "string", "subprocess", "sys",
            "textwrap", "threading", "time", "typing", "unicodedata")
_PLAIN_SCALARS = (int, float, complex, str, bytes, bool, type(None))
_PLAIN_CONTAINERS = (list, tuple, set, frozenset, dict)


def _read_exact(fd, n):
  buf = b""
  while len(buf) < n:
    chunk = os.read(fd, n - len(buf))
    if not chunk:
      return None
    buf += chunk
  return buf


def _read_msg(fd):
  header = _read_exact(fd, 4)
  if header is None:
    return None
  body = _read_exact(fd, struct.unpack(">I", header)[0])
  return None if body is None else json.loads(body)


def _write_msg(fd, obj):
  body = json.dumps(obj).encode()
  data = struct.pack(">I", len(body)) + body
  while data:
    data = data[os.write(fd, data):]


class _Server:

  def __init__(self, cfg):
    for name in _PRELOAD:
      try:
        __import__(name)
      except ImportError:
        pass
    self.root = cfg["root"]
    self.uid = cfg["uid"]
    self.gid = cfg["gid"]
    self.limits = cfg["limits"]
    self.as_root = os.geteuid() == 0
    self.counter = 0
    self.libc = ctypes.CDLL(None, use_errno=True)
    # Orphaned grandchildren re-parent to us, so we can reap them and the
    # /proc sweep below never mistakes a zombie for a live escapee.
    self.libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

  # ---- child side -------------------------------------------------------

  def _enter_child(self, rundir, stdin_path, out_w, err_w, res_w, timeout):
    """Confine the freshly forked child; runs before any untrusted code."""
    os.setsid()  # own process group, so one killpg reaches all descendants
    stdin_fd = os.open(stdin_path, os.O_RDONLY) if stdin_path else os.open(
        os.devnull, os.O_RDONLY)
    for src, dst in ((stdin_fd, 0), (out_w, 1), (err_w, 2), (res_w, _RESULT_FD)):
      os.dup2(src, dst)
    os.closerange(_RESULT_FD + 1, 1 << 16)
    lim = self.limits
    cpu = int(timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (lim["address_space"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_size"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    nproc = lim["processes"]
    if not self.as_root:
      # Without a uid of our own the limit counts every process of this user.
      nproc += _count_procs_of(os.getuid())
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    os.chdir(rundir)
    os.environ.update(HOME=rundir, TMPDIR=rundir, PWD=rundir)
    if self.as_root:
      os.setgroups([])
      os.setresgid(self.gid, self.gid, self.gid)
      os.setresuid(self.uid, self.uid, self.uid)
    self.libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.argv = ["solution.py"]

  # ---- server side ------------------------------------------------------

  def _sweep(self, pid):
    """Kills the reaped child's group, then anything still running as its uid."""
    _killpg(pid)
    if not self.as_root:
      return
    for _ in range(100):
      _reap_all()
      if not _count_procs_of(self.uid):
        return
      # A process that called setsid() has left the group; kill(-1) as the
      # child's uid reaches it (and nothing that belongs to anyone else).
      helper = os.fork()
      if helper == 0:
        try:
          os.setresuid(self.uid, self.uid, self.uid)
          os.kill(-1, signal.SIGKILL)
        finally:
          os._exit(0)
      os.waitpid(helper, 0)

  def run(self, req):
    self.counter += 1
    rundir = os.path.join(self.root, f"run{self.counter}")
    os.mkdir(rundir, 0o700)
    try:
      if self.as_root:
        os.chown(rundir, self.uid, self.gid)
      return self._run_in(req, rundir)
    finally:
      shutil.rmtree(rundir, ignore_errors=True)

  def _run_in(self, req, rundir):
    timeout = float(req["timeout"])
    stdin_path = None
    if req.get("stdin") is not None:
      stdin_path = os.path.join(rundir, ".stdin")
      with open(stdin_path, "w") as f:
        f.write(req["stdin"])
    nonce = secrets.token_hex(16)
    pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, result
    pid = os.fork()
    if pid == 0:
      try:
        for r, _ in pipes:
          os.close(r)
        self._enter_child(rundir, stdin_path, pipes[0][1], pipes[1][1],
                          pipes[2][1], timeout)
        _CHILD_OPS[req["op"]](req, nonce)
      except BaseException:  # nothing may escape a forked child
        traceback.print_exc()
      finally:
        os._exit(1)
    for _, w in pipes:
      os.close(w)
    out = self._collect(pid, [r for r, _ in pipes], timeout)
    out["nonce_ok"] = nonce
    return out

  def _collect(self, pid, fds, timeout):
    deadline = time.monotonic() + timeout
    bufs = {fd: bytearray() for fd in fds}
    open_fds = set(fds)
    pidfd = os.pidfd_open(pid)
    status, timed_out, overflow = None, False, False
    while open_fds or status is None:
      left = deadline - time.monotonic()
      if left <= 0 or overflow:
        timed_out = status is None and not overflow
        break
      watch = list(open_fds) + ([pidfd] if status is None else [])
      ready, _, _ = select.select(watch, [], [], left)
      for fd in ready:
        if fd == pidfd:
          status = os.waitpid(pid, 0)[1]
          # The program is done; its leftovers must not hold pipes open.
          self._sweep(pid)
          continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
          open_fds.discard(fd)
          os.close(fd)
        elif len(bufs[fd]) + len(chunk) > _MAX_CAPTURE:
          overflow = True
        else:
          bufs[fd] += chunk
    if status is None:
      _killpg(pid)
      status = os.waitpid(pid, 0)[1]
    self._sweep(pid)
    os.close(pidfd)
    for fd in open_fds:
      os.close(fd)
    _reap_all()
    out, err, res = (bytes(bufs[fd]).decode("utf-8", "replace") for fd in fds)
    return {
        "stdout": out,
        "stderr": err[-4000:],
        "result": res,
        "returncode": os.waitstatus_to_exitcode(status),
        "timed_out": timed_out,
        "overflow": overflow,
    }

  def serve(self):
    while True:
      req = _read_msg(0)
      if req is None:
        return
      if req["op"] == "ping":
        _write_msg(1, {"uid": os.getuid(), "pid": os.getpid()})
        continue
      try:
        resp = self.run(req)
        nonce = resp.pop("nonce_ok")
        resp["record"] = _single_record(resp.pop("result"), nonce)
      except Exception:  # one bad request must not take the server down
        resp = {"error": traceback.format_exc(limit=3)}
      _write_msg(1, resp)


def _single_record(text, nonce):
  """The child's result, only if it wrote exactly one record with our nonce."""
  lines = [l for l in text.splitlines() if l.strip()]
  if len(lines) != 1:
    return None
  try:
    record = json.loads(lines[0])
  except ValueError:
    return None
  if not isinstance(record, dict) or record.pop("nonce", None) != nonce:
    return None
  return record


def _killpg(pgid):
  try:
    os.killpg(pgid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


def _reap_all():
  while True:
    try:
      pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
      return
    if pid == 0:
      return


def _count_procs_of(uid):
  n = 0
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/status") as f:
        for line in f:
          if line.startswith("Uid:"):
            n += int(line.split()[1]) == uid
            break
    except OSError:
      continue
  return n


# ---- what a child runs (after confinement) --------------------------------


def _write_record(nonce, **fields):
  os.write(_RESULT_FD, (json.dumps(dict(nonce=nonce, **fields)) + "\n").encode())


def _exec_main(code):
  exec(compile(code, "solution.py", "exec"), {"__name__": "__main__",
                                                "__builtins__": builtins})


def _op_exec(req, nonce):
  """A stdin/stdout program; its output is judged on the host."""
  del nonce  # the output itself is the answer; there is nothing to forge
  code = 0
  try:
    _exec_main(req["code"])
  except SystemExit as e:  # sys.exit() after printing is a normal ending here
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:
    traceback.print_exc()
    code = 1
  try:
    sys.stdout.flush()
  except BaseException:
    code = 1
  os._exit(code)


def _op_call(req, nonce):
  """A call-based APPS program: returns fn_name(*args) as JSON."""
  ns = {"__name__": "__main__", "__builtins__": builtins}
  exec(compile(req["code"], "solution.py", "exec"), ns)
  fn = ns.get("Solution")
  fn = getattr(fn(), req["fn_name"]) if fn is not None and hasattr(
      fn, req["fn_name"]) else ns[req["fn_name"]]
  output = json.dumps(fn(*req["args"]))
  sys.stdout.flush()
  _write_record(nonce, output=output)
  os._exit(0)


def _require_plain(value):
  """Rejects return values that could lie in comparisons (custom __eq__)."""
  stack, seen = [value], 0
  while stack:
    v = stack.pop()
    seen += 1
    if seen > 1_000_000:
      raise TypeError("candidate returned too large a value")
    if type(v) in _PLAIN_SCALARS:
      continue
    if type(v) not in _PLAIN_CONTAINERS:
      raise TypeError(f"candidate returned a {type(v).__name__}, not plain data")
    stack.extend(v.items() if type(v) is dict else v)


def _compile_prompt(prompt):
  """The prompt alone; a signature without a docstring needs a body."""
  try:
    return compile(prompt, "<prompt>", "exec")
  except SyntaxError:
    return compile(prompt + "    pass\n", "<prompt>", "exec")


def _op_humaneval(req, nonce):
  """prompt + completion + test + check(entry_point), hardened against cheats.

  The completion's namespace only supplies the candidate. The test runs in a
  namespace built from the trusted prompt (plus the candidate under its own
  name) with a snapshot of the builtins taken before the completion ran, so a
  completion that redefines `check`, helpers or builtins changes nothing the
  test sees. SystemExit is a failure,
  and a pass is only the record written after check() returned.
  """
  pristine_builtins = dict(builtins.__dict__)
  pristine_modules = dict(sys.modules)
  try:
    ns = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile(req["prompt"] + req["completion"], "<completion>", "exec"), ns)
    candidate = ns[req["entry_point"]]
    for name in [m for m in sys.modules if m not in pristine_modules]:
      del sys.modules[name]
    sys.modules.update(pristine_modules)

    def guarded(*args, **kwargs):
      result = candidate(*args, **kwargs)
      _require_plain(result)
      return result

    test_ns = {"__name__": "__main__", "__builtins__": pristine_builtins}
    exec(_compile_prompt(req["prompt"]), test_ns)
    test_ns[req["entry_point"]] = guarded  # some tests call it by name
    exec(compile(req["test"], "<test>", "exec"), test_ns)
    test_ns["check"](guarded)
    status = "passed"
  except BaseException as e:  # noqa: B036 -- SystemExit must count as failure
    status = f"failed: {type(e).__name__}: {e}"[:300]
  _write_record(nonce, status=status)
  os._exit(0)


_CHILD_OPS = {"exec": _op_exec, "call": _op_call, "humaneval": _op_humaneval}


if __name__ == "__main__":
  _Server(json.loads(sys.argv[1])).serve()
