"""Kill a real `restem_jax.main` process at several points; the resumed run matches."""

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICRO = os.path.join(ROOT, "tests", "micro.gin")


def command(workdir):
  return [sys.executable, "-m", "restem_jax.main", f"--gin_file={MICRO}", f"--workdir={workdir}"]


def env():
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")


def run_until(workdir, condition, timeout=600):
  """Starts the run and SIGKILLs its whole process group once condition(workdir) holds."""
  proc = subprocess.Popen(command(workdir), cwd=ROOT, env=env(), start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      raise AssertionError(f"run ended (code {proc.returncode}) before the kill point")
    if condition(workdir):
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
      return
    time.sleep(0.02)
  os.killpg(proc.pid, signal.SIGKILL)
  raise AssertionError("kill point never reached")


def exists(*parts):
  return lambda workdir: all(os.path.exists(os.path.join(workdir, p)) for p in parts)


class ResumeTest(absltest.TestCase):

  def test_killed_runs_resume_to_the_same_summary(self):
    reference = tempfile.mkdtemp()
    subprocess.run(command(reference), cwd=ROOT, env=env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workdir = tempfile.mkdtemp()
    kill_points = {
        "mid E-step": exists("iter_1/samples/shard_00000.jsonl"),
        "mid M-step": exists("iter_1/m_step/progress.json"),
        # Evaluating the micro model takes milliseconds, too short a window to
        # hit reliably; the SFT control after it keeps the run alive for seconds.
        "after the last checkpoint (evaluation or control)": exists("iter_2/checkpoint/params"),
    }
    for name, condition in kill_points.items():
      with self.subTest(kill=name):
        run_until(workdir, condition)
        self.assertFalse(os.path.exists(os.path.join(workdir, "summary.json")))
    subprocess.run(command(workdir), cwd=ROOT, env=env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def load(path):
      with open(os.path.join(path, "summary.json")) as f:
        return json.load(f)

    self.assertEqual(load(workdir), load(reference))
    for i in (1, 2):
      lines = [l for f in glob.glob(f"{workdir}/iter_{i}/samples/*.jsonl") for l in open(f)]
      rows = [json.loads(l) for l in lines if not l.startswith('{"_end"')]  # Not end records.
      keys = [(row["problem_id"], row["sample_index"]) for row in rows]
      self.assertLen(keys, 40 * 4)
      self.assertLen(set(keys), len(keys))  # Nothing lost, nothing written twice.
      ref = sorted(l for f in glob.glob(f"{reference}/iter_{i}/samples/*.jsonl") for l in open(f))
      self.assertEqual(sorted(lines), ref)
    self.assertFalse(glob.glob(f"{workdir}/**/*.tmp", recursive=True))


class CliTest(absltest.TestCase):

  def run_cli(self, *args):
    return subprocess.run([sys.executable, "-m", "restem_jax.main", *args], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=300)

  def test_bad_binding_or_value_fails_before_any_work(self):
    for binding, message in (("RestemConfig.no_such_field=3", "no_such_field"),
                             ("RestemConfig.iterations='two'",
                              "RestemConfig.iterations='two' must be an int")):
      with self.subTest(binding):
        workdir = tempfile.mkdtemp()
        out = self.run_cli(f"--gin_file={MICRO}", f"--workdir={workdir}", f"--gin.{binding}")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn(message, out.stderr)
        self.assertEqual(os.listdir(workdir), [])

  def test_checkpoint_errors_end_in_one_line_with_the_traceback_in_the_workdir(self):
    from restem_jax.checkpoint_io import checkpoints  # pylint: disable=import-outside-toplevel
    from restem_jax.engine.config import ModelConfig  # pylint: disable=import-outside-toplevel
    from tests.utils import TINY, tiny_params  # pylint: disable=import-outside-toplevel
    micro = ModelConfig(vocab_size=264, embed_dim=32, num_layers=1, num_heads=2, num_kv_heads=1,
                        head_dim=16, mlp_dim=64)
    wrong_size, damaged = (os.path.join(tempfile.mkdtemp(), name) for name in ("wrong", "bad"))
    checkpoints.save(wrong_size, tiny_params(TINY))
    checkpoints.save(damaged, tiny_params(micro))
    data = max(glob.glob(f"{damaged}/params/**/*", recursive=True), key=os.path.getsize)
    with open(data, "r+b") as f:
      f.seek(os.path.getsize(data) // 2)
      f.write(b"\xff" * 64)
    for path, message in ((wrong_size, "does not match the configured model"),
                          (damaged, "is damaged")):
      with self.subTest(message):
        workdir = tempfile.mkdtemp()
        out = self.run_cli(f"--gin_file={MICRO}", f"--workdir={workdir}",
                           f"--gin.run.base_checkpoint='{path}'")
        self.assertEqual(out.returncode, 1)
        self.assertNotIn("Traceback", out.stderr)
        error = [l for l in out.stderr.splitlines() if l.startswith("error: ")]
        self.assertLen(error, 1)
        self.assertIn(message, error[0])
        self.assertIn("Traceback", open(os.path.join(workdir, "error.log")).read())

  def test_missing_gin_file_and_help(self):
    out = self.run_cli("--gin_file=nope.gin", "--workdir=/tmp/x")
    self.assertNotEqual(out.returncode, 0)
    self.assertIn("nope.gin", out.stderr)
    out = self.run_cli("--help")
    for flag in ("--gin_file", "--gin_bindings", "--workdir", "--[no]distributed"):
      self.assertIn(flag, out.stdout)

  def test_distributed_flags_are_checked_before_any_work(self):
    workdir = tempfile.mkdtemp()
    base = [f"--gin_file={MICRO}", f"--workdir={workdir}"]
    for extra, message in (
        (["--process_id=0"], "--process_id need --distributed"),
        (["--distributed", "--num_processes=2"], "also needs --coordinator_address, --process_id"),
        (["--distributed", "--coordinator_address=127.0.0.1:1", "--num_processes=2",
          "--process_id=2"], "--process_id=2 must be in [0, --num_processes=2)")):
      out = self.run_cli(*base, *extra)
      self.assertNotEqual(out.returncode, 0)
      self.assertIn(message, out.stderr)
    self.assertEqual(os.listdir(workdir), [])

  def test_gin_overrides_compose(self):
    from restem_jax.main import rewrite_gin_flags
    self.assertEqual(rewrite_gin_flags(["x", "--gin.A.b=1", "--gin_file=f.gin"]),
                     ["x", "--gin_bindings=A.b = 1", "--gin_file=f.gin"])


if __name__ == "__main__":
  absltest.main()
