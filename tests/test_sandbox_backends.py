"""Choosing a sandbox backend, forcing one, and refusing to run code without one."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from unittest import mock

from absl.testing import absltest
import gin

from restem_jax import configurables, rewards
from restem_jax.engine.config import ConfigError
from restem_jax.restem import rewarding
from restem_jax.rewards import evaluate, server
from restem_jax.rewards import sandbox as sandbox_lib
from restem_jax.tasks import base

_PROBLEM = {"task_id": "T/0", "prompt": "def f():\n", "entry_point": "f",
            "test": "def check(candidate):\n    assert candidate() == 1\n"}
_RIGHT = "    return 1\n"


def _broken(*names):
  """Makes the named backends' probes fail."""
  stack = contextlib.ExitStack()
  for name in names:
    stack.enter_context(mock.patch.object(
        sandbox_lib._BACKENDS[name], "problem", lambda: "broken for the test"))
  return stack


class ChoiceTest(absltest.TestCase):

  def test_strongest_working_backend_is_chosen(self):
    with mock.patch.dict(os.environ, {sandbox_lib.BACKEND_ENV: "auto"}):
      with _broken("bwrap"):
        self.assertEqual(sandbox_lib.select_backend(),
                         "none" if sandbox_lib.backend_problem("landlock") else "landlock")
      with _broken("bwrap", "landlock"):
        self.assertEqual(sandbox_lib.select_backend(), "none")
        self.assertTrue(rewards.isolation_description().startswith("none: UNSANDBOXED"))

  def test_environment_forces_a_backend(self):
    for name in sandbox_lib.BACKENDS:
      if not sandbox_lib.backend_problem(name):
        with mock.patch.dict(os.environ, {sandbox_lib.BACKEND_ENV: name}):
          self.assertEqual(sandbox_lib.select_backend(), name)
          self.assertTrue(rewards.isolation_description().startswith(f"{name}: "))

  def test_forced_backend_that_does_not_work_is_an_error(self):
    with _broken("landlock"), self.assertRaisesRegex(
        rewards.SandboxUnavailableError, "'landlock' was asked for .* broken for the test"):
      rewards.RewardPool(1, backend="landlock")
    with self.assertRaisesRegex(ValueError, "unknown sandbox backend 'chroot'"):
      sandbox_lib.select_backend("chroot")


class RefusalTest(absltest.TestCase):

  def test_sandbox_refuses_without_opt_out(self):
    with _broken("bwrap", "landlock"), self.assertRaises(
        rewards.SandboxUnavailableError) as caught:
      rewards.Sandbox(backend="none")
    message = str(caught.exception)
    self.assertNotIn("\n", message)
    for hint in ("apt-get install -y bubblewrap", "Landlock", "--allow_unsandboxed",
                 "run.allow_unsandboxed=True", "bwrap: broken for the test"):
      self.assertIn(hint, message)

  def test_pool_refuses_code_rewards_but_not_math(self):
    with rewards.RewardPool(1, backend="none") as pool:
      for task in ("humaneval", "apps"):
        with self.assertRaises(rewards.SandboxUnavailableError):
          pool.submit(task, [_PROBLEM], [_RIGHT])
      self.assertEqual(pool.score("math", [], [], progress=False), [])

  def test_opt_out_runs_with_a_warning(self):
    options = rewards.TaskOptions(allow_unsandboxed=True)
    with self.assertLogs("restem_jax.rewards.batch", "WARNING") as logs:
      pool = rewards.RewardPool(1, backend="none", options=options)
    with pool:
      self.assertEqual(pool.score("humaneval", [_PROBLEM], [_RIGHT], progress=False), [1.0])
    self.assertTrue(any("WITHOUT a sandbox" in line for line in logs.output), logs.output)


class EvaluateCliTest(absltest.TestCase):

  def _files(self):
    tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, tmp)
    problems, samples = os.path.join(tmp, "problems.jsonl"), os.path.join(tmp, "samples.jsonl")
    with open(problems, "w") as f:
      f.write(json.dumps(_PROBLEM) + "\n")
    with open(samples, "w") as f:
      f.write(json.dumps({"task_id": "T/0", "completion": _RIGHT}) + "\n")
    return ["--task=humaneval", f"--problems={problems}", f"--samples={samples}",
            "--k=1", "--num_workers=1", "--no_progress"]

  def test_refuses_then_runs_with_the_flag(self):
    args = self._files()
    with mock.patch.dict(os.environ, {sandbox_lib.BACKEND_ENV: "none"}):
      err, out = io.StringIO(), io.StringIO()
      with contextlib.redirect_stderr(err):
        self.assertEqual(evaluate.main(args), 2)
      self.assertIn("error: restem_jax.rewards: refusing", err.getvalue())
      with contextlib.redirect_stdout(out):
        self.assertEqual(evaluate.main(args + ["--allow_unsandboxed"]), 0)
      self.assertEqual(json.loads(out.getvalue()), {"pass@1": 1.0})


class ServerTest(absltest.TestCase):
  """The reward server as a user starts it, where no sandbox works."""

  def _start(self, *flags):
    env = dict(os.environ, **{sandbox_lib.BACKEND_ENV: "none"})
    proc = subprocess.Popen([sys.executable, "-m", "restem_jax.rewards.server", "--port=0",
                             "--num_workers=1", *flags], env=env, stderr=subprocess.PIPE,
                            text=True)
    self.addCleanup(proc.wait)
    self.addCleanup(proc.kill)
    lines, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline:
      line = proc.stderr.readline()
      self.assertTrue(line, f"the server exited: {lines}")
      lines.append(line)
      if line.startswith("reward server on "):
        port = int(line.split(":")[2].split(" ")[0])
        if not flags:  # The warning follows the address line.
          lines.append(proc.stderr.readline())
        return server.RewardClient(f"http://127.0.0.1:{port}"), lines
    self.fail(f"no address line within 60 s: {lines}")

  def test_code_tasks_refused_with_the_reason_and_math_scored(self):
    client, lines = self._start()
    self.assertIn("warning: code tasks will get 503: restem_jax.rewards: refusing", lines[-1])
    self.assertFalse(client.health()["code_tasks_run"])
    with self.assertRaisesRegex(rewards.SandboxUnavailableError,
                                "reward server .*: restem_jax.rewards: refusing .*"
                                "--allow_unsandboxed"):
      client.score_batch("humaneval", [_PROBLEM], [_RIGHT])
    self.assertEqual(client.score_batch("gsm8k", [{"answer": "#### 3"}], ["3"]), [1.0])

  def test_opt_out_scores_code_tasks(self):
    client, _ = self._start("--allow_unsandboxed")
    self.assertTrue(client.health()["code_tasks_run"])
    self.assertEqual(client.score_batch("humaneval", [_PROBLEM], [_RIGHT]), [1.0])


class LoopTest(absltest.TestCase):

  def tearDown(self):
    rewards.set_default_options(rewards.TaskOptions())
    gin.clear_config()
    super().tearDown()

  def _task(self):
    return base.TaskSpec(
        name="code", load_split=lambda split: [], splits=("test",), reward=None,
        extract_answer=lambda c: c, stop_strings=(), vocabulary=None,
        score_batch=lambda r, c: rewards.score_batch("humaneval", r, c, progress=False))

  def test_run_start_refuses_or_warns(self):
    with mock.patch.dict(os.environ, {sandbox_lib.BACKEND_ENV: "none"}):
      with self.assertRaisesRegex(ConfigError, "refusing to run model-written programs"):
        rewarding.prepare(self._task(), allow_unsandboxed=False)
      with self.assertLogs(level="WARNING") as logs:
        rewarding.prepare(self._task(), allow_unsandboxed=True)
      self.assertTrue(any("run.allow_unsandboxed = True" in l for l in logs.output))
      self.assertEqual(rewards.score_batch("humaneval", [_PROBLEM], [_RIGHT],
                                           progress=False), [1.0])

  def test_opt_out_is_recorded_in_the_fingerprint(self):
    gin.parse_config("run.allow_unsandboxed = True")
    self.assertEqual(configurables.result_bindings().get("run.allow_unsandboxed"), "True")


if __name__ == "__main__":
  absltest.main()
