"""One run per workdir: the configuration that made its files, and who is writing them.

A workdir's finished stages are only valid for the configuration that made
them: rerun with other samples per problem, shard size or validation seed,
and old and new results would mix without a word. So the first start records
the bindings that determine results (`fingerprint.json`); every later start
compares and refuses on a difference, naming the bindings, unless the user
allows it (`--allow_config_change`), which is logged and recorded.

Two launches writing one workdir would corrupt it, so process 0 holds
`lock.json` while the run lives. The lock names its process by host, boot and
pid plus the process's start time: a pid alone is reused (after a container
restart a new run may get its predecessor's pid), and host names repeat
across machines. A lock of a process that is gone from this very boot of this
host is stale and taken over; any other lock (another host, or this host
before a reboot) is never taken silently, since its process cannot be checked
from here.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
from typing import Iterator, Mapping

import jax
import numpy as np

from restem_jax.checkpoint_io import files
from restem_jax.engine import multihost

FINGERPRINT = "fingerprint.json"
LOCK = "lock.json"
CONFIG = "config.gin"


class WorkdirError(RuntimeError):
  """The workdir belongs to another configuration or another running process."""


def differences(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
  """Human-readable `key: old -> new` lines (unset means the library default)."""
  lines = []
  for key in sorted(set(old) | set(new)):
    if old.get(key) != new.get(key):
      lines.append(f"{key}: {old.get(key, '(default)')} -> {new.get(key, '(default)')}")
  return lines


def check_config(workdir: str, current: Mapping[str, str], config_text: str,
                 allow_change: bool = False) -> None:
  """Records the run's result-determining bindings ({"Class.param": repr(value)}) on
  first start; refuses a rerun with different ones.

  Every process compares (they read the same file); process 0 writes the
  fingerprint and `config_text` (as config.gin) only once the check passed.
  """
  path = os.path.join(workdir, FINGERPRINT)
  current = dict(current)
  record = files.read_json(path) if files.exists(path) else None
  multihost.sync("fingerprint read")
  changed = differences(record["bindings"], current) if record else []
  if changed and not allow_change:
    raise WorkdirError(
        f"{workdir} holds results of another configuration; these bindings differ from its "
        f"{FINGERPRINT}:\n  " + "\n  ".join(changed) + "\nUse a new --workdir for the new "
        "configuration, or pass --allow_config_change to reuse this one: every finished stage "
        "(E-step shards, kept sets, checkpoints, metrics) made under the old values is kept.")
  if changed:
    logging.warning("--allow_config_change: keeping %s's finished stages, made with the old "
                    "values of:\n  %s", workdir, "\n  ".join(changed))
  if record is None or changed:
    history = (record or {}).get("changes", [])
    if changed:
      history.append({"time": _now(), "changed": changed})
    files.write_json(path, {"bindings": current, "changes": history})
  files.write_text(os.path.join(workdir, CONFIG), config_text)
  multihost.sync("fingerprint written")


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds the workdir's lock (process 0, for the whole run) until the block exits."""
  path = os.path.join(workdir, LOCK)
  error = _acquire(path) if jax.process_index() == 0 else ""
  if not multihost.agree(np.int32(not error)):
    raise WorkdirError(error or f"process 0 could not lock {workdir} (its log says why).")
  try:
    yield
  finally:
    if jax.process_index() == 0:
      _release(path)


def _acquire(path: str) -> str:
  """'' once this process holds the lock at `path`, else why not."""
  me = dict(_identity(os.getpid()), since=_now())
  for _ in range(2):  # A second try after removing a stale lock.
    if _create(path, json.dumps(me)):
      return ""
    try:
      owner = files.read_json(path)
    except (OSError, ValueError):
      owner = None  # Being written, or damaged: treat as held.
    if owner and _stale(owner, me):
      logging.warning("%s: taking over the stale lock of pid %s (started at tick %s of this "
                      "boot; no longer running)", path, owner.get("pid"), owner.get("start"))
      files.remove_file(path)
      continue
    who = (f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('since')}"
           if owner else "another process")
    return (f"{os.path.dirname(path)} is in use by {who}. Two runs in one workdir would mix "
            f"their files: wait for that run to end, or, if it is gone (e.g. its VM was "
            f"preempted or rebooted), delete {path} and rerun.")
  return f"could not take the lock {path}"


def _identity(pid: int) -> dict:
  """What names a process for as long as it lives: its host, the host's boot, pid and start."""
  return {"host": socket.gethostname(), "boot": _read_text("/proc/sys/kernel/random/boot_id"),
          "pid": pid, "start": _start_time(pid)}


def _stale(owner: Mapping, me: Mapping) -> bool:
  """Whether `owner`'s process is known to be gone: only this boot of this host can tell."""
  if (owner.get("host"), owner.get("boot")) != (me["host"], me["boot"]):
    return False
  if not _alive(owner.get("pid")):
    return True
  # A live pid with another start time is a new process that reused the pid.
  return me["start"] is not None and _start_time(owner.get("pid")) != owner.get("start")


def _start_time(pid) -> str | None:
  """The process's start, in clock ticks since boot (/proc/PID/stat field 22); None where
  there is no /proc or no such process."""
  stat = _read_text(f"/proc/{pid}/stat") if isinstance(pid, int) else None
  # The command name (field 2) may hold spaces and parentheses: count from its end.
  return stat[stat.rindex(")") + 2:].split()[19] if stat else None


def _read_text(path: str) -> str | None:
  try:
    with open(path, encoding="utf-8") as f:
      return f.read().strip()
  except OSError:
    return None


def _create(path: str, text: str) -> bool:
  """Creates `path` with `text` unless it exists."""
  if files.exists(path) or not files.create_exclusive(path, text):
    return False
  # GCS-compatible servers that ignore the create precondition (the test
  # server does) would let two starts both "create": the read-back narrows it.
  return not files.is_remote(path) or files.read_text(path) == text


def _release(path: str) -> None:
  try:
    owner = files.read_json(path)
    if {k: owner.get(k) for k in ("host", "boot", "pid", "start")} == _identity(os.getpid()):
      files.remove_file(path)
  except (OSError, ValueError):
    pass


def _alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, TypeError, ValueError):
    return True  # Exists but not ours, or unreadable: never assume it is gone.
  return True


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
