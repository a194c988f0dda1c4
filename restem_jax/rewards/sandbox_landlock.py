"""The Landlock + seccomp backend: no namespaces, no privileges, no new package.

For machines where bubblewrap cannot run (not installed, or a container
without user namespaces). The fork server runs unconfined (it is trusted, and
sweeps /proc for escaped processes); its program spawner, and with it every
program, confines itself before exec (confine.py):
  * Landlock: read the system trees and the Python install with every
    site-packages/dist-packages directory left out (rules are allow-lists, so
    the walk below grants their siblings instead; their parents stay listable,
    so package names show, never their files); write only beneath the
    sandbox's root, which holds the run directories; /dev/null and the random
    devices; no /proc, /sys, /home, /tmp. ABI 4+: no TCP bind/connect. ABI 6+:
    no signals to, or abstract-socket connects with, processes outside.
  * seccomp: no socket but AF_UNIX, no ptrace, process_vm_readv/writev,
    pidfd_getfd or io_uring.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from restem_jax.rewards import confine
from restem_jax.rewards import sandbox_paths as paths

NAME = "landlock"
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


@functools.lru_cache(maxsize=None)
def problem() -> str:
  """'' if confinement works and holds here (tried in a child), else why not."""
  if confine.landlock_abi() < 1:
    return "the kernel has no Landlock (Linux 5.13+ with landlock in its LSM list)"
  with tempfile.TemporaryDirectory() as root:
    write = os.path.join(root, "w")
    os.mkdir(write)
    probe = [sys.executable, "-I", "-S", confine.__file__,
             json.dumps(_spec(write))]
    try:
      run = subprocess.run(probe, capture_output=True, env=paths.clean_env(),
                           cwd=write, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
      return f"Landlock probe failed: {e}"
    if run.returncode or not os.path.exists(os.path.join(write, "ok")):
      err = run.stderr.decode(errors="replace").strip().splitlines()[-1:]
      return f"Landlock + seccomp did not confine a test process {err}"
  return ""


def description() -> str:
  abi = confine.landlock_abi()
  scoped = ("signals and abstract sockets scoped to the sandbox" if abi >= 6 else
            "signals NOT scoped (ABI < 6)")
  return (f"Landlock ABI {abi} + seccomp (read-only standard library, writes only "
          "in the sandbox's run directories, no installed packages, no /proc; "
          f"no network sockets; no ptrace or cross-process memory reads; {scoped}; "
          "no pid/ipc namespaces)")


def launch(host_root: str, cfg: dict[str, Any]) -> list[str]:
  """The command that starts the fork server, whose spawner confines itself."""
  cfg = dict(cfg, root=host_root, confine=_spec(host_root))
  return [sys.executable, "-I", paths.ZYGOTE, json.dumps(cfg)]


def _spec(write_root: str) -> dict[str, list[str]]:
  readable, listable = _readable()
  return {"read": readable + [paths.CANDIDATE], "list": listable,
          "write": [write_root], "devices": list(_DEVICES)}


@functools.lru_cache(maxsize=None)
def _readable() -> tuple[list[str], list[str]]:
  """The fewest paths covering the system trees and the Python install but no
  package directory, and the directories that hold both (listable only:
  imports list the standard library's directory)."""
  hidden = paths.package_dirs()
  roots = {os.path.realpath(p) for p in paths.SYSTEM_DIRS + paths.SYSTEM_FILES}
  roots.update(paths.python_prefixes())
  out: list[str] = []
  split: list[str] = []
  for root in sorted(roots):
    if os.path.exists(root) and not any(_within(root, r) and r != root for r in roots):
      _cover(root, hidden, out, split)
  return sorted(set(out)), sorted(set(split))  # links resolve to paths covered twice


def _cover(path: str, hidden: list[str], out: list[str], split: list[str]) -> None:
  if path in hidden:
    return
  if not any(_within(h, path) for h in hidden):
    out.append(path)
    return
  split.append(path)
  for entry in sorted(os.listdir(path)):
    child = os.path.join(path, entry)
    target = os.path.realpath(child)
    if os.path.islink(child) and (any(_within(target, h) or _within(h, target)
                                      for h in hidden)):
      continue  # a link into or above a hidden directory
    if os.path.islink(child):
      out.append(target)
    else:
      _cover(child, hidden, out, split)


def _within(path: str, parent: str) -> bool:
  return path == parent or path.startswith(parent.rstrip("/") + "/")
