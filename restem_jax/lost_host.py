"""Stops every process of a multi-host run within seconds of one of them dying.

A collective whose peer died does not reliably raise: with 2 processes x 2
CPU devices, a survivor blocked in a gloo all-reduce waited until JAX's
heartbeat check aborted it (a native stack dump, no word of what happened).
So each process holds a TCP connection to process 0, which the kernel closes
the moment a process dies. Process 0 tells the others which connection
closed; a process whose connection to process 0 closes knows process 0 is
gone. Either way it prints one line and exits with status 1. A process that
finishes says so first, so its exit is not mistaken for a loss.

A host that vanishes without its sockets being closed (cut off from the
network) is still only caught by JAX's heartbeat timeout.
"""

from __future__ import annotations

import os
import socket
import sys
import threading

import jax
import numpy as np

from restem_jax.engine import multihost

_DONE, _LOST = b"done\n", b"lost "
_exit_lock = threading.Lock()
_finished = threading.Event()
_peers: list[socket.socket] = []


def exit_lost(who: str, how: str) -> None:
  """Prints the one line for a lost process and exits at once, in whichever thread calls it.

  A normal exit would wait in JAX's shutdown barrier for the dead process
  until the heartbeat timeout aborts this one with a native stack dump.
  """
  with _exit_lock:
    # On a line of its own: a progress bar may be half drawn.
    print(f"\nerror: lost {who} ({how}); rerun the same command on every host to resume",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)  # pylint: disable=protected-access


def start_watch() -> None:
  """Connects this process to process 0 (all of them call this, after jax.distributed)."""
  if not multihost.is_multiprocess():
    return
  n, me = jax.process_count(), jax.process_index()
  server = socket.create_server(("", 0)) if me == 0 else None
  port = int(multihost.agree(np.int32(server.getsockname()[1] if server else 0)))
  if server:
    for _ in range(n - 1):
      _peers.append(server.accept()[0])
    server.close()
    ids = [int(conn.recv(16).split(b"\n")[0]) for conn in _peers]
    for conn, i in zip(_peers, ids):
      threading.Thread(target=_watch_peer, args=(conn, i, n), daemon=True).start()
  else:
    # Private, but it is the address every process already reaches process 0 at,
    # whether given by flag or detected on a TPU pod.
    from jax._src import distributed  # pylint: disable=import-outside-toplevel
    host = distributed.global_state.coordinator_address.rsplit(":", 1)[0].strip("[]")
    conn = socket.create_connection((host, port))
    conn.sendall(f"{me}\n".encode())
    _peers.append(conn)
    threading.Thread(target=_watch_process_0, args=(conn, n), daemon=True).start()
  multihost.sync("lost-host watch started")


def finish() -> None:
  """Tells the others that this process is ending on purpose (the run finished or failed)."""
  _finished.set()
  for conn in _peers:
    try:
      conn.sendall(_DONE)
    except OSError:
      pass  # That peer is gone already; nothing to tell it.


def _watch_peer(conn: socket.socket, i: int, n: int) -> None:
  """On process 0: process i's connection; if it closes unannounced, tell the rest and stop."""
  if _read_until_closed(conn) == _DONE or _finished.is_set():
    return
  for other in _peers:
    if other is not conn:
      try:
        other.sendall(_LOST + f"{i}\n".encode())
      except OSError:
        pass  # Another one gone too: its own thread reports it.
  exit_lost(f"process {i} of {n}", "its connection to process 0 closed")


def _watch_process_0(conn: socket.socket, n: int) -> None:
  message = _read_until_closed(conn)
  if message == _DONE or _finished.is_set():
    return
  if message.startswith(_LOST):
    exit_lost(f"process {int(message[len(_LOST):])} of {n}", "process 0 saw its connection close")
  exit_lost(f"process 0 of {n}", "this process's connection to it closed")


def _read_until_closed(conn: socket.socket) -> bytes:
  """The first message on `conn`, or b"" once it closes or fails."""
  data = b""
  while not data.endswith(b"\n"):
    try:
      chunk = conn.recv(64)
    except OSError:
      return b""
    if not chunk:
      return b""
    data += chunk
  return data
