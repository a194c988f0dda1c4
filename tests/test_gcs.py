"""A whole micro run with --workdir=gs://bucket/run against a real GCS-compatible server.

Killed mid M-step and rerun, it ends with the summary of a local run, and
every artefact (samples, kept set, checkpoints, metrics, TensorBoard events,
plot, config) is an object in the bucket, none a local `gs:` directory.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest

from tests.gcs_server import GcsServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICRO = os.path.join(ROOT, "tests", "micro.gin")


class GcsWorkdirTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.server = GcsServer()
    self.addCleanup(self.server.stop)
    self.cwd = tempfile.mkdtemp()  # A relative "gs:" directory would show up here.
    self.env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", **self.server.env())

  def start(self, workdir):
    return subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-m", "restem_jax.main", f"--gin_file={MICRO}", f"--workdir={workdir}"],
        cwd=self.cwd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True)

  def finish(self, proc, timeout=600):
    try:
      _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      proc.kill()
      raise
    self.assertEqual(proc.returncode, 0, err[-3000:])

  def test_gcs_workdir_lock(self):
    script = """if True:
        from restem_jax.checkpoint_io import files
        from restem_jax.restem import workdir
        with workdir.lock("gs://bkt/locked"):
          assert files.exists("gs://bkt/locked/lock.json")
          try:
            with workdir.lock("gs://bkt/locked"):
              raise SystemExit("a second lock was granted")
          except workdir.WorkdirError as e:
            assert "is in use by pid" in str(e), e
        assert not files.exists("gs://bkt/locked/lock.json")
        assert files.create_exclusive("gs://bkt/other.json", "{}")
        """
    out = subprocess.run([sys.executable, "-c", script], cwd=self.cwd, env=self.env,
                         capture_output=True, text=True, timeout=300)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertEqual(self.server.names("locked"), [])
    self.assertEqual(self.server.names("other.json"), ["other.json"])

  def test_killed_gcs_run_resumes_to_the_local_summary(self):
    local = tempfile.mkdtemp()
    self.finish(self.start(local))
    proc = self.start("gs://bkt/run")
    deadline = time.time() + 600
    while not self.server.names("run/iter_1/m_step/progress.json"):
      self.assertIsNone(proc.poll(), "run ended before the kill point")
      self.assertLess(time.time(), deadline)
      time.sleep(0.2)
    os.killpg(proc.pid, 9)
    proc.wait()
    self.assertEmpty(self.server.names("run/summary.json"))
    self.finish(self.start("gs://bkt/run"))

    with open(os.path.join(local, "summary.json")) as f:
      self.assertEqual(json.loads(self.server.read("run/summary.json")), json.load(f))
    names = self.server.names("run/")
    for expected in ("run/config.gin", "run/iter_1/kept.jsonl", "run/iter_2/metrics.json",
                     "run/iter_2/checkpoint/params/commit_success.txt",
                     "run/base/params/commit_success.txt", "run/pass_at_1.png",
                     "run/iter_1/samples/shard_00000.jsonl", "run/control/metrics.json"):
      self.assertIn(expected, names)
    self.assertTrue(any(n.startswith("run/tensorboard/events.out.tfevents") for n in names))
    self.assertFalse([n for n in names if "/m_step/" in n or "base_training" in n])
    self.assertEqual(self.server.read("run/pass_at_1.png")[:8], b"\x89PNG\r\n\x1a\n")
    self.assertEqual(os.listdir(self.cwd), [])
    shutil.rmtree(local)


if __name__ == "__main__":
  absltest.main()
