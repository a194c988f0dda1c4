"""tpu_scripts/: shellcheck-clean, and each script issues the right gcloud calls.

gcloud is replaced by a fake on PATH that records its arguments, so the test
runs the real scripts end to end without a cloud project.
"""

import os
import shutil
import stat
import subprocess
import tempfile
import unittest

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "tpu_scripts")
EXECUTABLES = ("create_tpu.sh", "setup_workers.sh", "copy_data.sh", "launch.sh",
               "fetch_results.sh", "delete_tpu.sh")
FAKE_GCLOUD = """#!/usr/bin/env bash
for a in "$@"; do printf '%s\\n' "$a" >> "$GCLOUD_LOG"; done
echo '----' >> "$GCLOUD_LOG"
exit "${FAKE_GCLOUD_RC:-0}"
"""


class TpuScriptsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()
    bin_dir = os.path.join(self.tmp, "bin")
    os.makedirs(bin_dir)
    fake = os.path.join(bin_dir, "gcloud")
    with open(fake, "w") as f:
      f.write(FAKE_GCLOUD)
    os.chmod(fake, os.stat(fake).st_mode | stat.S_IEXEC)
    self.log = os.path.join(self.tmp, "gcloud.log")
    self.env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", GCLOUD_LOG=self.log,
                    TPU_NAME="test-tpu", ZONE="zone-x", ACCELERATOR_TYPE="v4-32",
                    PROJECT="proj")

  def tearDown(self):
    shutil.rmtree(self.tmp, ignore_errors=True)
    super().tearDown()

  def run_script(self, name, *args, **env):
    if os.path.exists(self.log):
      os.remove(self.log)
    result = subprocess.run([os.path.join(SCRIPTS, name), *args], env=dict(self.env, **env),
                            cwd=self.tmp, capture_output=True, text=True, check=False)
    calls = []
    if os.path.exists(self.log):
      with open(self.log) as f:
        calls = [c.strip("\n").split("\n") for c in f.read().split("----\n") if c.strip()]
    return result, calls

  @unittest.skipIf(shutil.which("shellcheck") is None, "apt-get install shellcheck")
  def test_shellcheck_clean(self):
    scripts = sorted(os.path.join(SCRIPTS, n) for n in os.listdir(SCRIPTS) if n.endswith(".sh"))
    self.assertLen(scripts, len(EXECUTABLES) + 1)
    result = subprocess.run(["shellcheck", "-x", *scripts], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

  def test_every_script_is_strict_and_documented(self):
    for name in EXECUTABLES:
      with open(os.path.join(SCRIPTS, name)) as f:
        text = f.read()
      self.assertIn("set -euo pipefail", text, name)
      self.assertIn("# Usage:", text, name)
      self.assertTrue(os.access(os.path.join(SCRIPTS, name), os.X_OK), name)

  def test_create(self):
    result, calls = self.run_script("create_tpu.sh", SPOT="1")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(calls[0][:4], ["compute", "tpus", "tpu-vm", "create"])
    self.assertIn("test-tpu", calls[0])
    for flag in ("--accelerator-type=v4-32", "--zone=zone-x", "--project=proj", "--spot"):
      self.assertIn(flag, calls[0])

  def test_setup_installs_tpu_extra_on_all_workers(self):
    result, calls = self.run_script("setup_workers.sh")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(calls[0][3], "scp")
    self.assertIn("--worker=all", calls[0])
    ssh = calls[1]
    self.assertEqual(ssh[3], "ssh")
    self.assertIn("--worker=all", ssh)
    command = [a for a in ssh if a.startswith("--command=")][0]
    self.assertIn("pip install -e ~/restem_jax'[tpu,convert]'", command)
    # Code rewards refuse to run without a sandbox: every worker gets bubblewrap.
    self.assertIn("apt-get install -y -qq bubblewrap", command)
    self.assertIn("rewards.isolation_description()", command)

  def test_launch_runs_main_distributed_on_all_workers(self):
    result, calls = self.run_script("launch.sh", "--gin_file=gin_configs/models/gemma_2b.gin",
                                    "--gin.RestemConfig.iterations=2", WORKDIR="gs://b/run")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertLen(calls, 1)
    self.assertIn("--worker=all", calls[0])
    command = [a for a in calls[0] if a.startswith("--command=")][0]
    self.assertIn("python3 -m restem_jax.main --distributed --workdir=gs://b/run", command)
    self.assertIn("--gin_file=gin_configs/models/gemma_2b.gin", command)
    _, calls = self.run_script("launch.sh", "--gin_file=x.gin", DETACH="1")
    command = [a for a in calls[0] if a.startswith("--command=")][0]
    self.assertIn("nohup", command)

  def test_copy_data_and_fetch_results(self):
    data = os.path.join(self.tmp, "data.jsonl")
    open(data, "w").close()
    result, calls = self.run_script("copy_data.sh", data)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn(data, calls[1])
    self.assertIn("test-tpu:restem_data/", calls[1])
    result, _ = self.run_script("copy_data.sh")
    self.assertEqual(result.returncode, 2)
    self.assertIn("usage", result.stderr)
    result, calls = self.run_script("fetch_results.sh", os.path.join(self.tmp, "out"))
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("--worker=0", calls[0])
    self.assertIn("test-tpu:restem_work", calls[0])

  def test_delete_and_failure_propagates(self):
    result, calls = self.run_script("delete_tpu.sh")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("--quiet", calls[0])
    result, calls = self.run_script("create_tpu.sh", FAKE_GCLOUD_RC="3")
    self.assertEqual(result.returncode, 3)
    self.assertLen(calls, 1)  # set -e: stopped after the failing create.


if __name__ == "__main__":
  absltest.main()
