"""A workdir refuses another configuration's rerun and a second live run."""

import json
import os
import socket
import subprocess
import sys
import tempfile

import gin
from absl.testing import absltest

from restem_jax import configurables
from restem_jax.restem import workdir
from tests.test_loop import MICRO, run_micro


def parse(*bindings):
  gin.clear_config()
  gin.parse_config_files_and_bindings([MICRO], list(bindings))


def check(d, allow_change=False):
  workdir.check_config(d, configurables.result_bindings(), gin.config_str(), allow_change)


class FingerprintTest(absltest.TestCase):

  def tearDown(self):
    gin.clear_config()
    super().tearDown()

  def test_changed_binding_is_refused_by_name_and_nothing_is_rewritten(self):
    d = tempfile.mkdtemp()
    parse()
    check(d)
    before = {name: open(os.path.join(d, name)).read()
              for name in (workdir.FINGERPRINT, workdir.CONFIG)}
    parse("RestemConfig.num_samples = 8", "RestemConfig.val_seed = 3")
    with self.assertRaises(workdir.WorkdirError) as raised:
      check(d)
    message = str(raised.exception)
    self.assertIn("RestemConfig.num_samples: 4 -> 8", message)
    self.assertIn("RestemConfig.val_seed: (default) -> 3", message)
    self.assertIn("--allow_config_change", message)
    self.assertNotIn("shard_size", message)  # Unchanged bindings are not listed.
    for name, text in before.items():
      self.assertEqual(open(os.path.join(d, name)).read(), text)

  def test_allowed_change_is_recorded(self):
    d = tempfile.mkdtemp()
    parse()
    check(d)
    parse("RestemConfig.iterations = 3")
    with self.assertLogs(level="WARNING") as logs:
      check(d, allow_change=True)
    self.assertIn("RestemConfig.iterations: 2 -> 3", "\n".join(logs.output))
    record = json.load(open(os.path.join(d, workdir.FINGERPRINT)))
    self.assertEqual(record["bindings"]["RestemConfig.iterations"], "3")
    self.assertEqual(record["changes"][0]["changed"], ["RestemConfig.iterations: 2 -> 3"])
    self.assertIn("RestemConfig.iterations = 3", open(os.path.join(d, workdir.CONFIG)).read())
    check(d)  # The new values are now the workdir's own.

  def test_placement_settings_may_change(self):
    d = tempfile.mkdtemp()
    parse()
    check(d)
    parse("MeshConfig.data = 1", "RestemConfig.sample_batch = 4", "ModelConfig.remat = False")
    check(d)
    # Microbatches: the same effective batch, loss and gradients (float rounding aside),
    # and the same train state, so a run can resume mid M-step with more of them.
    parse("FinetuneConfig.grad_accum_steps = 4", "base/FinetuneConfig.grad_accum_steps = 2")
    self.assertNotIn("FinetuneConfig.grad_accum_steps", configurables.result_bindings())
    self.assertNotIn("base/FinetuneConfig.grad_accum_steps", configurables.result_bindings())
    check(d)
    parse("FinetuneConfig.batch_size = 8")  # The effective batch is a result's.
    with self.assertRaisesRegex(workdir.WorkdirError, "FinetuneConfig.batch_size: 16 -> 8"):
      check(d)

  def test_macro_and_scoped_bindings_count(self):
    parse("base/FinetuneConfig.max_steps = 7")
    self.assertEqual(configurables.result_bindings()["base/FinetuneConfig.max_steps"], "7")

  def test_the_run_refuses_before_any_work(self):
    d = tempfile.mkdtemp()
    parse("RestemConfig.num_samples = 2")
    check(d)
    gin.clear_config()
    with self.assertRaisesRegex(workdir.WorkdirError, "RestemConfig.num_samples: 2 -> 4"):
      run_micro(d)
    self.assertEqual(sorted(os.listdir(d)), [workdir.CONFIG, workdir.FINGERPRINT])


class LockTest(absltest.TestCase):

  def write_lock(self, d, owner):
    with open(os.path.join(d, workdir.LOCK), "w") as f:
      json.dump(dict(owner, since="then"), f)

  def lock_pid(self, d):
    with open(os.path.join(d, workdir.LOCK)) as f:
      return json.load(f)["pid"]

  def sleeper(self):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    self.addCleanup(proc.kill)
    return proc

  def test_held_while_running_and_released(self):
    d = tempfile.mkdtemp()
    with workdir.lock(d):
      owner = json.load(open(os.path.join(d, workdir.LOCK)))
      self.assertEqual((owner["host"], owner["pid"]), (socket.gethostname(), os.getpid()))
      self.assertIsNotNone(owner["start"])
      self.assertIsNotNone(owner["boot"])
    self.assertFalse(os.path.exists(os.path.join(d, workdir.LOCK)))

  def test_a_live_process_keeps_it(self):
    d = tempfile.mkdtemp()
    other = self.sleeper()
    self.write_lock(d, workdir._identity(other.pid))  # pylint: disable=protected-access
    with self.assertRaisesRegex(workdir.WorkdirError, f"in use by pid {other.pid} on "):
      with workdir.lock(d):
        pass
    self.assertEqual(self.lock_pid(d), other.pid)

  def test_a_reused_pid_is_not_its_owner(self):
    # After a container restart the new run may hold its predecessor's pid.
    d = tempfile.mkdtemp()
    before_restart = workdir._identity(os.getpid())  # pylint: disable=protected-access
    before_restart["start"] = str(int(before_restart["start"]) - 1000)
    self.write_lock(d, before_restart)
    with workdir.lock(d):
      with open(os.path.join(d, workdir.LOCK)) as f:
        self.assertEqual(json.load(f)["start"], workdir._identity(os.getpid())["start"])  # pylint: disable=protected-access

  def test_another_hosts_lock_is_never_taken(self):
    d = tempfile.mkdtemp()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    elsewhere = [{"host": "some-other-host", "boot": "b", "pid": gone.pid, "start": "1"},
                 # Same host name, another boot: another machine, or this one before a
                 # reboot; its pid says nothing here.
                 dict(workdir._identity(gone.pid), boot="another-boot")]  # pylint: disable=protected-access
    for owner in elsewhere:
      self.write_lock(d, owner)
      with self.assertRaisesRegex(workdir.WorkdirError, "delete .*lock.json"):
        with workdir.lock(d):
          pass
      self.assertEqual(self.lock_pid(d), gone.pid)

  def test_a_dead_process_lock_is_taken_over(self):
    d = tempfile.mkdtemp()
    gone = self.sleeper()
    self.write_lock(d, workdir._identity(gone.pid))  # pylint: disable=protected-access
    gone.kill()
    gone.wait()
    with workdir.lock(d):
      self.assertEqual(self.lock_pid(d), os.getpid())


if __name__ == "__main__":
  absltest.main()
