"""Where untrusted programs run: a spawner that never holds anyone's data.

This file runs as a script inside the sandbox (`python -I -S candidate.py CFG`),
started by the fork server (zygote.py) through exec, so its memory starts
empty: it holds no request, test, expected output or other program. For each
program it receives only file descriptors and a run directory, and forks one
child that confines itself and then reads its own job from that directory.
Whatever a program finds in its memory is therefore its own input.

Standard library only; zygote.py also imports this file for the plain-data
codec, the message framing and the process count.

A child's job (`.job` in its run directory) is one of:
  exec   run `code` as __main__ with the stdin file; report {"exit": code}.
  call   `fn_name(*args)` from `code`; report {"output": json.dumps(value)}.
  serve  define `entry_point` from `code`, then answer calls from the
         HumanEval harness, which runs in another process: fd 3 brings
         {"args", "kwargs"}, fd 4 takes {"value"} or {"raised", "message"}.
Reports go to fd 4; none of them decides a reward by itself.
"""

import builtins
import ctypes
import fcntl
import json
import os
import resource
import signal
import socket
import struct
import sys
import traceback

MAX_MESSAGE = 16 << 20  # bytes; a larger value or reply is a failure
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_IN, _OUT = 3, 4  # a child's job channel (see the module docstring)
# Imported once here so children need not read them from disk: faster, and
# the only way they work when the interpreter lives in a directory the
# unprivileged uid cannot enter (e.g. pyenv under /root without bubblewrap).
_PRELOAD = ("abc", "array", "bisect", "calendar", "cmath", "collections",
            "contextlib", "copy", "dataclasses", "datetime", "decimal",
            "enum", "fractions", "functools", "hashlib", "heapq", "io",
            "itertools", "json", "math", "numbers", "operator", "queue",
            "random", "re", "statistics", "string", "subprocess", "sys",
            "textwrap", "threading", "time", "typing", "unicodedata")

# ---- framing and plain data, shared with the harness ------------------------


def read_exact(fd, n):
  buf = bytearray()
  while len(buf) < n:
    chunk = os.read(fd, n - len(buf))
    if not chunk:
      return None
    buf += chunk
  return bytes(buf)


def read_msg(fd, limit=MAX_MESSAGE):
  """One length-prefixed JSON message, or None at end of stream."""
  header = read_exact(fd, 4)
  if header is None:
    return None
  size = struct.unpack(">I", header)[0]
  if size > limit:
    raise ValueError(f"message of {size} bytes exceeds {limit}")
  body = read_exact(fd, size)
  return None if body is None else json.loads(body)


def write_msg(fd, obj):
  body = json.dumps(obj).encode()
  data = struct.pack(">I", len(body)) + body
  while data:
    data = data[os.write(fd, data):]


_TAGS = {"t": tuple, "s": set, "f": frozenset}


def encode(value):
  """JSON for plain built-in data only; exact types, so no custom __eq__ passes.

  JSON objects are reserved for tags: a tuple, set, frozenset, dict, bytes or
  complex arrives as the same type, not as a list or a str-keyed dict.
  """
  kind = type(value)
  if value is None or kind in (bool, int, float, str):
    return value
  if kind is list:
    return [encode(v) for v in value]
  for tag, container in _TAGS.items():
    if kind is container:
      return {tag: [encode(v) for v in value]}
  if kind is dict:
    return {"d": [[encode(k), encode(v)] for k, v in value.items()]}
  if kind is bytes:
    return {"b": value.hex()}
  if kind is complex:
    return {"c": [value.real, value.imag]}
  raise TypeError(f"returned a {kind.__name__}, not plain built-in data")


def decode(value):
  """The inverse of `encode`, building only built-in types."""
  if isinstance(value, list):
    return [decode(v) for v in value]
  if not isinstance(value, dict):
    return value
  if len(value) != 1:
    raise ValueError("malformed plain-data message")
  (tag, body), = value.items()
  if tag in _TAGS:
    return _TAGS[tag](decode(v) for v in body)
  if tag == "d":
    return {decode(k): decode(v) for k, v in body}
  if tag == "b":
    return bytes.fromhex(body)
  if tag == "c":
    return complex(*body)
  raise ValueError(f"unknown plain-data tag {tag!r}")


def count_procs_of(uid):
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


def place_fds(fds):
  """Puts `fds` on 0, 1, 2, ... in order and closes every other descriptor."""
  # Out of the way first: one of them may already sit on a target number.
  high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in fds]
  for target, fd in enumerate(high):
    os.dup2(fd, target)
  os.closerange(len(fds), 1 << 16)


def limit_cpu_and_memory(limits, timeout):
  cpu = int(timeout) + 1
  resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
  resource.setrlimit(resource.RLIMIT_AS, (limits["address_space"],) * 2)


# ---- the spawner ---------------------------------------------------------------


def _confine(cfg, job, fds):
  """Runs in a fresh child before any untrusted code: limits, fds, uid."""
  os.setsid()  # own process group, so one killpg reaches all descendants
  signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the spawner ignores it
  signal.signal(signal.SIGPIPE, signal.SIG_DFL)
  place_fds(fds)  # stdin, stdout, stderr, _IN, _OUT
  limits = cfg["limits"]
  limit_cpu_and_memory(limits, job["timeout"])
  resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size"],) * 2)
  resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"],) * 2)
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
  nproc = limits["processes"]
  as_root = os.geteuid() == 0
  if not as_root:
    # Without a uid of our own the limit counts every process of this user.
    nproc += count_procs_of(os.getuid())
  resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
  rundir = job["rundir"]
  os.chdir(rundir)
  os.environ.clear()
  os.environ.update(PATH="/usr/local/bin:/usr/bin:/bin", LANG="C.UTF-8",
                    HOME=rundir, TMPDIR=rundir, PWD=rundir)
  if as_root:
    os.setgroups([])
    os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
    os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
  ctypes.CDLL(None).prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
  # `-S` skips site, which is also what defines these two.
  builtins.exit = builtins.quit = sys.exit
  sys.argv = ["solution.py"]


def _spawn(sock, cfg):
  signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
  while True:
    try:
      msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 8)
    except OSError:
      return
    if not msg:
      return
    job = json.loads(msg)
    pid = os.fork()
    if pid == 0:
      try:
        sock.close()
        _confine(cfg, job, fds)
        _run(json.load(open(".job", encoding="utf-8")))
      except BaseException:  # nothing may escape a forked child
        traceback.print_exc()
      finally:
        os._exit(1)
    for fd in fds:
      os.close(fd)
    sock.sendall(struct.pack(">i", pid))


# ---- what a child runs (after confinement) ----------------------------------


def _run(job):
  {"exec": _op_exec, "call": _op_call, "serve": _op_serve}[job["op"]](job)


def _main_namespace():
  return {"__name__": "__main__", "__builtins__": builtins}


def _op_exec(job):
  """A stdin/stdout program; its output is judged on the host."""
  code = 0
  try:
    exec(compile(job["code"], "solution.py", "exec"), _main_namespace())
  except SystemExit as e:  # sys.exit() after printing is a normal ending here
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:
    traceback.print_exc()
    code = 1
  try:
    sys.stdout.flush()
  except BaseException:
    code = 1
  os.write(_OUT, (json.dumps({"exit": code}) + "\n").encode())
  os._exit(code)


def _op_call(job):
  """A call-based APPS program: returns fn_name(*args) as JSON."""
  ns = _main_namespace()
  exec(compile(job["code"], "solution.py", "exec"), ns)
  fn = ns.get("Solution")
  fn = getattr(fn(), job["fn_name"]) if fn is not None and hasattr(
      fn, job["fn_name"]) else ns[job["fn_name"]]
  output = json.dumps(fn(*job["args"]))
  sys.stdout.flush()
  os.write(_OUT, (json.dumps({"output": output}) + "\n").encode())
  os._exit(0)


def _op_serve(job):
  """Defines the candidate, then answers the harness's calls until it hangs up."""
  try:
    ns = _main_namespace()
    exec(compile(job["code"], "<completion>", "exec"), ns)
    candidate = ns[job["entry_point"]]
  except BaseException as e:  # noqa: B036 -- SystemExit too
    write_msg(_OUT, {"error": f"{type(e).__name__}: {e}"[:300]})
    os._exit(1)
  write_msg(_OUT, {"ready": True})
  while True:
    call = read_msg(_IN)
    if call is None:
      os._exit(0)
    try:
      value = candidate(*decode(call["args"]), **decode(call["kwargs"]))
      reply = {"value": encode(value)}
    except BaseException as e:  # noqa: B036 -- reported to the harness
      reply = {"raised": type(e).__name__, "message": str(e)[:300]}
    write_msg(_OUT, reply)


def _preload():
  for name in _PRELOAD:
    try:
      __import__(name)
    except ImportError:
      pass


if __name__ == "__main__":
  _config = json.loads(sys.argv[1])
  # Same-uid processes (no root: no uid drop) may not ptrace us or read our
  # memory; nothing secret is here, but the descriptors we pass are.
  ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
  _preload()
  _spawn(socket.socket(fileno=_config["socket"]), _config)
