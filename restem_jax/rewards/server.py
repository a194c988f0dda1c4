"""HTTP reward server that several TPU hosts can share, and its client.

  python -m restem_jax.rewards.server --host=0.0.0.0 --port=8470 \
      [--num_workers=N] [--token=SECRET] [--allow_unsandboxed]

  POST /score  {"task", "problems": [...], "completions": [...]}
       -> {"rewards": [1.0, 0.0, ...], "results": ["passed", ...]}
  GET  /health -> {"isolation", "workers", "tasks", "code_tasks_run"}

Where no sandbox backend works, code tasks get 503 with the one-line refusal
(the client raises it as SandboxUnavailableError) and math tasks are scored;
--allow_unsandboxed opts out, as in rewards.evaluate.

Requests from all clients share one RewardPool, so the host's cores stay busy
whichever TPU host sends work. Use --token (or RESTEM_REWARDS_TOKEN) whenever
the port is reachable by anything but your own hosts.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hmac
import http.server
import json
import os
import select
import socket
import sys
import urllib.error
import urllib.request
from typing import Any, Mapping, Sequence

from restem_jax.rewards import scoring
from restem_jax.rewards.batch import RewardInputError, RewardPool
from restem_jax.rewards.sandbox import SandboxUnavailableError, check_allowed, refusal

_MAX_BODY = 512 << 20
_READ_TIMEOUT = 60.0  # Seconds a client may stall mid-request before its connection closes.
_LOG_CHARS = 300  # Longest request-derived text a log line or error reply echoes.
_TOKEN_ENV = "RESTEM_REWARDS_TOKEN"


def make_server(pool: RewardPool, host: str = "127.0.0.1", port: int = 8470,
                token: str | None = None, *, read_timeout: float = _READ_TIMEOUT,
                max_body: int = _MAX_BODY) -> http.server.ThreadingHTTPServer:
  """A server scoring with `pool`; call serve_forever() on it.

  Every client-side failure gets a 4xx answer, never a dropped connection: a
  stalled upload times out (408), a missing or malformed Content-Length (411,
  400), an oversized (413) or too deeply nested body (400, past Python's
  recursion limit, which json enforces). A client that
  disconnects while its batch is scored has the batch's unstarted items
  cancelled.
  """

  class Handler(http.server.BaseHTTPRequestHandler):
    timeout = read_timeout  # Applied to the socket: reads and writes stall at most this long.

    def _reply(self, code: int, body: dict[str, Any]) -> None:
      data = json.dumps(body).encode()
      self.send_response(code)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def _authorized(self) -> bool:
      if token is None:
        return True
      sent = self.headers.get("Authorization", "")
      return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())

    def do_GET(self) -> None:
      if self.path != "/health":
        return self._reply(404, {"error": f"no such path {self.path}"})
      self._reply(200, {"isolation": pool.isolation, "workers": pool.num_workers,
                        "tasks": list(scoring.TASKS), "code_tasks_run": _code_tasks_run(pool)})

    def do_POST(self) -> None:
      if self.path != "/score":
        return self._reply(404, {"error": f"no such path {self.path}"})
      if not self._authorized():
        return self._reply(401, {"error": "missing or wrong bearer token"})
      text = self.headers.get("Content-Length")
      if text is None:
        return self._reply(411, {"error": "Content-Length is required"})
      if not text.strip().isdigit():
        return self._reply(400, {"error": f"Content-Length {_clip(text)!r} is not a number"})
      if not 0 < int(text) <= max_body:
        return self._reply(413, {"error": f"body must be 1..{max_body} bytes"})
      try:
        body = self.rfile.read(int(text))
      except TimeoutError:
        self.close_connection = True
        return self._reply(408, {"error": f"body not received within {read_timeout:g} s"})
      try:
        req = json.loads(body)
        future = pool.submit(req["task"], req["problems"], req["completions"],
                             progress=False)
      except RecursionError:
        return self._reply(400, {"error": "JSON nested too deeply"})
      except SandboxUnavailableError as e:
        return self._reply(503, {"error": str(e), "kind": _REFUSED})
      except (KeyError, TypeError, ValueError, RewardInputError) as e:
        return self._reply(400, {"error": _clip(f"{type(e).__name__}: {e}")})
      items = self._wait(future)
      if items is None:
        return None
      self._reply(200, {"rewards": [i.reward for i in items],
                        "results": [i.result for i in items]})

    def _wait(self, future: concurrent.futures.Future) -> list | None:
      """The batch's items, or None (batch cancelled) if the client went away first."""
      while True:
        try:
          return future.result(timeout=0.5)
        except concurrent.futures.TimeoutError:
          if _disconnected(self.connection):
            future.cancel()
            self.close_connection = True
            self.log_message("client went away; its batch is cancelled")
            return None
        except RewardInputError as e:
          self._reply(400, {"error": _clip(f"{type(e).__name__}: {e}")})
          return None

    def log_message(self, fmt: str, *args: Any) -> None:
      sys.stderr.write(f"reward server {self.address_string()}: {_clip(fmt % args)}\n")

  server = http.server.ThreadingHTTPServer((host, port), Handler)
  server.daemon_threads = True
  return server


_REFUSED = "sandbox_unavailable"


def _code_tasks_run(pool: RewardPool) -> bool:
  try:
    check_allowed(pool.backend, pool.options.allow_unsandboxed)
    return True
  except SandboxUnavailableError:
    return False


def _clip(text: str) -> str:
  return text if len(text) <= _LOG_CHARS else text[:_LOG_CHARS] + f"... ({len(text)} chars)"


def _disconnected(sock: socket.socket) -> bool:
  """Whether the peer closed its end (a readable socket with nothing to read)."""
  try:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
  except OSError:
    return True


class RewardClient:
  """Client of a reward server; same calls as the local API."""

  def __init__(self, url: str, token: str | None = None,
               timeout: float = 3600.0, max_parallel: int = 4):
    self.url = url.rstrip("/")
    self.token = token if token is not None else os.environ.get(_TOKEN_ENV)
    self.timeout = timeout
    self._executor = concurrent.futures.ThreadPoolExecutor(max_parallel)

  def _request(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(self.url + path, data=data)
    req.add_header("Content-Type", "application/json")
    if self.token:
      req.add_header("Authorization", f"Bearer {self.token}")
    try:
      with urllib.request.urlopen(req, timeout=self.timeout) as resp:
        return json.loads(resp.read())
    except urllib.error.HTTPError as e:
      detail = e.read().decode(errors="replace")
      if e.code == 503 and _REFUSED in detail:
        raise SandboxUnavailableError(
            f"reward server {self.url}: {json.loads(detail)['error']}") from None
      raise RuntimeError(f"reward server {self.url}{path}: HTTP {e.code}: "
                         f"{detail}") from e

  def health(self) -> dict[str, Any]:
    return self._request("/health", None)

  def score_batch_detailed(self, task: str,
                           problems: Sequence[Mapping[str, Any]],
                           completions: Sequence[str]) -> dict[str, list]:
    scoring.check_task(task)
    return self._request("/score", {"task": task, "problems": list(problems),
                                    "completions": list(completions)})

  def score_batch(self, task: str, problems: Sequence[Mapping[str, Any]],
                  completions: Sequence[str]) -> list[float]:
    return self.score_batch_detailed(task, problems, completions)["rewards"]

  def score_batch_async(self, task: str, problems: Sequence[Mapping[str, Any]],
                        completions: Sequence[str]
                        ) -> concurrent.futures.Future:
    return self._executor.submit(self.score_batch, task, list(problems),
                                 list(completions))

  def get_reward(self, task: str):
    scoring.check_task(task)
    return lambda problem, completion: self.score_batch(
        task, [problem], [completion])[0]


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description="restem_jax reward server")
  parser.add_argument("--host", default="127.0.0.1")
  parser.add_argument("--port", type=int, default=8470)
  parser.add_argument("--num_workers", type=int, default=None)
  parser.add_argument("--token", default=os.environ.get(_TOKEN_ENV))
  parser.add_argument("--allow_unsandboxed", action="store_true",
                      help="Score code tasks even where no sandbox backend works.")
  args = parser.parse_args(argv)
  options = scoring.TaskOptions(allow_unsandboxed=args.allow_unsandboxed)
  try:
    pool = RewardPool(args.num_workers, options=options)
  except SandboxUnavailableError as e:  # A forced backend (RESTEM_SANDBOX_BACKEND) that fails.
    print(f"error: {e}", file=sys.stderr)
    return 2
  with pool:
    server = make_server(pool, args.host, args.port, args.token)
    print(f"reward server on http://{args.host}:{server.server_port} "
          f"({pool.num_workers} workers; isolation: {pool.isolation})",
          file=sys.stderr, flush=True)
    if not _code_tasks_run(pool):
      print(f"warning: code tasks will get 503: {refusal()}", file=sys.stderr, flush=True)
    try:
      server.serve_forever()
    except KeyboardInterrupt:
      pass
    finally:
      server.server_close()
  return 0


if __name__ == "__main__":
  sys.exit(main())
