"""The bubblewrap backend: the fork server in new namespaces on a minimal filesystem.

New pid, network, ipc and uts namespaces; a read-only filesystem of /usr and
the Python install with every site-packages and dist-packages directory
emptied (so no installed dataset is visible); a private /dev; no /proc of the
host, no /tmp, no /home.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from restem_jax.rewards import sandbox_paths as paths

NAME = "bwrap"
_SANDBOX_PKG = "/opt/restem_sandbox"
_SANDBOX_ROOT = "/sandbox"


@functools.lru_cache(maxsize=None)
def problem() -> str:
  """'' if `bwrap` exists and can create the namespaces we ask for, else why not."""
  if shutil.which("bwrap") is None:
    return "bwrap is not installed"
  with tempfile.TemporaryDirectory() as root:
    probe = _argv(root, [sys.executable, "-I", "-S", "-c", "pass"])
    try:
      run = subprocess.run(probe, capture_output=True, env=paths.clean_env(),
                           timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
      return f"bwrap failed: {e}"
  if run.returncode:
    # In containers without user namespaces this says so (e.g. "No permissions
    # to create new namespace").
    return f"bwrap failed: {run.stderr.decode(errors='replace').strip()[:200]}"
  return ""


def description() -> str:
  return ("bubblewrap (pid/net/ipc/uts/mount namespaces, no network, "
          "read-only minimal filesystem, no installed packages)")


def launch(host_root: str, cfg: dict[str, Any]) -> list[str]:
  """The command that starts the fork server with `cfg` inside bubblewrap."""
  cfg = dict(cfg, root=_SANDBOX_ROOT)
  return _argv(host_root, [sys.executable, "-I", f"{_SANDBOX_PKG}/zygote.py",
                           json.dumps(cfg)])


def _ro_binds() -> list[str]:
  args: list[str] = []
  for path in paths.SYSTEM_DIRS:
    if os.path.islink(path):
      args += ["--symlink", os.readlink(path), path]
    elif os.path.isdir(path):
      args += ["--ro-bind", path, path]
  for path in paths.SYSTEM_FILES:
    args += ["--ro-bind-try", path, path]
  for path in paths.python_prefixes():
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
  for path in paths.package_dirs():
    args += ["--tmpfs", path, "--remount-ro", path]
  return args


def _argv(host_root: str, command: list[str]) -> list[str]:
  argv = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid",
          "--unshare-net", "--unshare-ipc", "--unshare-uts", "--clearenv",
          "--hostname", "sandbox", "--proc", "/proc", "--dev", "/dev"]
  argv += _ro_binds()
  for name in paths.SANDBOX_FILES:
    argv += ["--ro-bind", os.path.join(paths.HERE, name), f"{_SANDBOX_PKG}/{name}"]
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
