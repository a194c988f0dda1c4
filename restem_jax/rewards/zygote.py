"""In-sandbox program server: runs untrusted programs and judges HumanEval apart from them.

This file runs as a script inside the sandbox (see sandbox.py for the
backends), started by `sandbox.Sandbox`. It must stay standard-library only
and must not import the rest of the package: under bubblewrap the sandbox only
sees this file and candidate.py, read-only (confine.py is loaded only by the
Landlock backend, which runs this file from the package directory).

Processes, and who may trust whom:
  server (this file, trusted)  receives requests, including HumanEval tests.
  spawner (candidate.py)       started by exec, so it never held a request;
                               forks one child per program. Why a spawner:
                               forking a warm interpreter costs about 1 ms,
                               starting one 15-80 ms.
  program (child of spawner)   untrusted; an unprivileged uid of its own when
                               we are root; reads only its own job.
  judge (child of server)      trusted; runs a HumanEval test against the
                               program over two pipes and writes the verdict
                               on a third that the program never holds.
A program's memory holds nothing but its own job, its filesystem shows no
dataset, and all it can send back is data: an exit code and output (APPS,
judged on the host) or plain return values (HumanEval, judged here).

Protocol on fds 0/1: 4-byte big-endian length + UTF-8 JSON, one request, one
response, in lock step.
"""

import builtins
import ctypes
import importlib.util
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
_CANDIDATE = os.path.join(_HERE, "candidate.py")
_spec = importlib.util.spec_from_file_location("restem_candidate", _CANDIDATE)
candidate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(candidate)

_MAX_CAPTURE = 8 << 20  # bytes of stdout/stderr kept per program
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36


class _Server:

  def __init__(self, cfg):
    self.root = cfg["root"]
    self.uid = cfg["uid"]
    self.gid = cfg["gid"]
    self.limits = cfg["limits"]
    self.as_root = os.geteuid() == 0
    self.counter = 0
    libc = ctypes.CDLL(None, use_errno=True)
    # Orphaned grandchildren re-parent to us, so we can reap them and the
    # /proc sweep below never mistakes a zombie for a live escapee.
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # Without root, programs share our uid: they must not ptrace us or the
    # judge (its child) or read our memory, which holds the tests.
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    ours, theirs = socket.socketpair()
    spawner_cfg = dict(cfg, socket=theirs.fileno())
    spawner_cfg.pop("confine", None)
    self.spawner = subprocess.Popen(
        [sys.executable, "-I", "-S", _CANDIDATE, json.dumps(spawner_cfg)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        pass_fds=(theirs.fileno(),), preexec_fn=_confiner(cfg.get("confine")))
    theirs.close()
    self.sock = ours

  # ---- one program ----------------------------------------------------------

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
    stdin_path = os.devnull
    if req.get("stdin") is not None:
      stdin_path = os.path.join(rundir, ".stdin")
      with open(stdin_path, "w") as f:
        f.write(req["stdin"])
    job_path = os.path.join(rundir, ".job")
    with open(job_path, "w", encoding="utf-8") as f:
      json.dump(_job(req), f)
    os.chmod(job_path, 0o644)  # read by the program after it drops its uid
    out, err, res = os.pipe(), os.pipe(), os.pipe()
    stdin = os.open(stdin_path, os.O_RDONLY)
    judge = None
    if req["op"] == "humaneval":
      calls, replies = os.pipe(), os.pipe()
      judge = os.fork()
      if judge == 0:
        try:
          _judge_child(req, calls[1], replies[0], res[1], err[1], timeout,
                       self.limits)
        finally:
          os._exit(1)
      os.close(calls[1])
      os.close(replies[0])
      os.close(res[1])
      child_fds = [stdin, out[1], err[1], calls[0], replies[1]]
    else:
      child_fds = [stdin, out[1], err[1], os.open(os.devnull, os.O_RDONLY),
                   res[1]]
    try:
      pid = self._spawn(rundir, timeout, child_fds)
    finally:
      for fd in child_fds:
        os.close(fd)
    reply = self._collect(judge or pid, judge is not None, [pid, judge],
                          [out[0], err[0], res[0]], timeout)
    record = _single_record(reply.pop("result"))
    reply["record"] = record
    if req["op"] == "exec":
      exit_code = (record or {}).get("exit")
      # A program killed by a signal or a limit never reports its exit.
      reply["returncode"] = exit_code if isinstance(exit_code, int) else -1
    return reply

  def _spawn(self, rundir, timeout, fds):
    """The spawner forks the program; returns its pid."""
    msg = json.dumps({"rundir": rundir, "timeout": timeout}).encode()
    socket.send_fds(self.sock, [msg], fds)
    answer = candidate.read_exact(self.sock.fileno(), 4)
    if answer is None:
      raise RuntimeError("the program spawner died")
    return struct.unpack(">i", answer)[0]

  def _collect(self, main, main_is_child, pids, fds, timeout):
    """Reads the pipes until `main` has ended and they are closed, or the deadline."""
    deadline = time.monotonic() + timeout
    bufs = {fd: bytearray() for fd in fds}
    open_fds = set(fds)
    try:
      pidfd = os.pidfd_open(main)
    except ProcessLookupError:  # the program was quicker than we were
      pidfd = None
    ended, timed_out, overflow = pidfd is None, False, False
    if ended:
      self._sweep(pids)
    while open_fds or not ended:
      left = deadline - time.monotonic()
      if left <= 0 or overflow:
        timed_out = not ended and not overflow
        break
      watch = list(open_fds) + ([] if ended else [pidfd])
      ready, _, _ = select.select(watch, [], [], left)
      for fd in ready:
        if fd == pidfd:
          ended = True
          if main_is_child:
            _wait(main)
          # Done: its leftovers must not hold pipes open.
          self._sweep(pids)
          continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
          open_fds.discard(fd)
        elif len(bufs[fd]) + len(chunk) > _MAX_CAPTURE:
          overflow = True
        else:
          bufs[fd] += chunk
    self._sweep(pids)
    if main_is_child and not ended:
      _wait(main)
    if pidfd is not None:
      os.close(pidfd)
    for fd in fds:
      os.close(fd)
    _reap_all()
    out, err, res = (bytes(bufs[fd]).decode("utf-8", "replace") for fd in fds)
    return {"stdout": out, "stderr": err[-4000:], "result": res,
            "timed_out": timed_out, "overflow": overflow}

  def _sweep(self, pids):
    """Kills the process groups, then anything still running as the program's uid."""
    for pid in pids:
      if pid is not None:
        _killpg(pid)
    if not self.as_root:
      return
    for _ in range(100):
      _reap_all()
      if not candidate.count_procs_of(self.uid):
        return
      # A process that called setsid() has left the group; kill(-1) as the
      # program's uid reaches it (and nothing that belongs to anyone else).
      helper = os.fork()
      if helper == 0:
        try:
          os.setresuid(self.uid, self.uid, self.uid)
          os.kill(-1, signal.SIGKILL)
        finally:
          os._exit(0)
      os.waitpid(helper, 0)

  def serve(self):
    while True:
      req = candidate.read_msg(0, limit=1 << 31)
      if req is None:
        return
      if req["op"] == "ping":
        candidate.write_msg(1, {"uid": os.getuid(), "pid": os.getpid()})
        continue
      try:
        resp = self.run(req)
      except Exception:  # one bad request must not take the server down
        resp = {"error": traceback.format_exc(limit=3)}
      candidate.write_msg(1, resp)
      if self.spawner.poll() is not None:
        return  # the host restarts us, and with us a clean spawner


def _job(req):
  """What the program may see: never a HumanEval test."""
  if req["op"] == "humaneval":
    return {"op": "serve", "code": req["prompt"] + req["completion"],
            "entry_point": req["entry_point"]}
  fields = ("op", "code", "fn_name", "args")
  return {k: req[k] for k in fields if k in req}


def _confiner(spec):
  """For the Landlock backend: confines the spawner, and so every program,
  between fork and exec; this server and the judge stay outside. A failure
  ends the spawner's start, and with it this server's."""
  if spec is None:
    return None
  path = os.path.join(_HERE, "confine.py")
  confine_spec = importlib.util.spec_from_file_location("restem_confine", path)
  module = importlib.util.module_from_spec(confine_spec)
  confine_spec.loader.exec_module(module)
  return lambda: module.confine(spec)


def _single_record(text):
  """The one JSON object a process reported, or None for anything else."""
  lines = [l for l in text.splitlines() if l.strip()]
  if len(lines) != 1:
    return None
  try:
    record = json.loads(lines[0])
  except ValueError:
    return None
  return record if isinstance(record, dict) else None


def _killpg(pgid):
  try:
    os.killpg(pgid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


def _wait(pid):
  try:
    os.waitpid(pid, 0)
  except ChildProcessError:  # already reaped by a sweep
    pass


def _reap_all():
  while True:
    try:
      pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
      return
    if pid == 0:
      return


# ---- the HumanEval judge (a trusted child of the server) -------------------


def _judge_child(req, calls, replies, verdict, err, timeout, limits):
  """Confines the judge, runs the test, writes one verdict record."""
  os.setsid()
  devnull = os.open(os.devnull, os.O_RDWR)
  # stdin, stdout, stderr, 3 verdict, 4 calls, 5 replies
  candidate.place_fds([devnull, devnull, err, verdict, calls, replies])
  candidate.limit_cpu_and_memory(limits, timeout)
  os.chdir("/")
  status = _judge(req, _Remote(4, 5))
  os.write(3, (json.dumps({"status": status}) + "\n").encode())
  os._exit(0)


class _Remote:
  """The candidate as the test sees it: each call runs in the program's process."""

  def __init__(self, calls, replies):
    self.calls, self.replies = calls, replies

  def receive(self):
    reply = candidate.read_msg(self.replies)
    if reply is None:
      raise RuntimeError("the program ended without answering")
    return reply

  def __call__(self, *args, **kwargs):
    candidate.write_msg(self.calls, {"args": candidate.encode(list(args)),
                                     "kwargs": candidate.encode(kwargs)})
    reply = self.receive()
    if "value" in reply:
      return candidate.decode(reply["value"])
    kind = getattr(builtins, str(reply.get("raised")), None)
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
      kind = RuntimeError
    raise kind(str(reply.get("message", "")))


def _judge(req, remote):
  """prompt + test + check(candidate), with the candidate in another process.

  The test namespace is built here from the trusted prompt, so helpers the
  test uses (e.g. `encode_cyclic`) are the dataset's own whatever the
  completion redefined; a pass is check() returning.
  """
  try:
    ready = remote.receive()
    if "ready" not in ready:
      return f"failed: {ready.get('error', 'no function defined')}"[:300]
    test_ns = {"__name__": "__main__"}
    exec(_compile_prompt(req["prompt"]), test_ns)
    test_ns[req["entry_point"]] = remote  # some tests call it by name
    exec(compile(req["test"], "<test>", "exec"), test_ns)
    test_ns["check"](remote)
    return "passed"
  except BaseException as e:  # noqa: B036 -- any failure is a failed test
    return f"failed: {type(e).__name__}: {e}"[:300]


def _compile_prompt(prompt):
  """The prompt alone; a signature without a docstring needs a body."""
  try:
    return compile(prompt, "<prompt>", "exec")
  except SyntaxError:
    return compile(prompt + "    pass\n", "<prompt>", "exec")


if __name__ == "__main__":
  _Server(json.loads(sys.argv[1])).serve()
