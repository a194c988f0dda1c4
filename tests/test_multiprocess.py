"""Multi-host JAX on one machine: 2 processes x 2 CPU devices against 1 process x 4.

The pod path (`python -m restem_jax.main --distributed ...` on every host)
is run for real with gloo collectives on localhost: the engine's train step,
sampler and checkpoints; the whole micro loop, also killed and rerun; and a
workdir that the processes do not share, which must fail fast and say why.
"""

import json
import os
import tempfile

import numpy as np
from absl.testing import absltest

from tests import multiprocess as mp

MICRO = os.path.join(mp.ROOT, "tests", "micro.gin")
WORKER = os.path.join(mp.ROOT, "tests", "multiprocess_worker.py")


def loop_args(workdir, port=None, n=1):
  def args(i):
    extra = mp.distributed_flags(port, n, i) if n > 1 else []
    return ["-m", "restem_jax.main", f"--gin_file={MICRO}", f"--workdir={workdir}", *extra]
  return args


def run(args_of, n, devices, deadline_s=600, until=None):
  logdir = tempfile.mkdtemp()
  codes = mp.wait(mp.start(args_of, n, devices, logdir), deadline_s, logdir, until)
  return codes, logdir


def summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


class EngineAcrossProcessesTest(absltest.TestCase):

  def test_train_step_sampler_and_checkpoints_match_one_process(self):
    results = {}
    for n in (1, 2):
      out = tempfile.mkdtemp()
      port = mp.free_port()
      codes, logdir = run(lambda i: [WORKER, str(port), str(n), str(i), out], n, 4 // n, 300)
      self.assertEqual(codes, [0] * n, mp.tails(logdir, n))
      results[n] = dict(np.load(os.path.join(out, "results.npz")))
    one, two = results[1], results[2]
    self.assertEqual((int(two["processes"]), int(two["devices"])), (2, 4))
    self.assertTrue(bool(two["restored_equal"]))
    np.testing.assert_allclose(two["step_loss"], one["step_loss"], rtol=1e-5)
    np.testing.assert_allclose(two["loss_after"], one["loss_after"], rtol=1e-5)
    np.testing.assert_allclose(two["norm_after"], one["norm_after"], rtol=1e-5)
    self.assertLess(float(two["loss_after"]), float(two["step_loss"]))  # The step trained.
    np.testing.assert_array_equal(two["tokens"], one["tokens"])
    np.testing.assert_array_equal(two["lengths"], one["lengths"])
    np.testing.assert_allclose(two["scored"], one["scored"], atol=1e-5)
    kept = np.arange(two["logprobs"].shape[-1]) < two["lengths"][..., None]
    np.testing.assert_allclose(np.concatenate([lp[k] for lp, k in zip(
        two["logprobs"].reshape(-1, kept.shape[-1]), kept.reshape(-1, kept.shape[-1]))]),
        two["scored"], atol=1e-5)


class LoopAcrossProcessesTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.reference = tempfile.mkdtemp()
    codes, logdir = run(loop_args(cls.reference), 1, 4)
    assert codes == [0], mp.tails(logdir, 1)

  def test_two_processes_give_one_process_summary(self):
    workdir = tempfile.mkdtemp()
    codes, logdir = run(loop_args(workdir, mp.free_port(), 2), 2, 2)
    self.assertEqual(codes, [0, 0], mp.tails(logdir, 2))
    self.assertEqual(summary(workdir), summary(self.reference))

  def test_killed_mid_m_step_and_rerun(self):
    workdir = tempfile.mkdtemp()
    progress = os.path.join(workdir, "iter_1", "m_step", "progress.json")
    run(loop_args(workdir, mp.free_port(), 2), 2, 2, until=lambda: os.path.exists(progress))
    self.assertFalse(os.path.exists(os.path.join(workdir, "summary.json")))
    codes, logdir = run(loop_args(workdir, mp.free_port(), 2), 2, 2)
    self.assertEqual(codes, [0, 0], mp.tails(logdir, 2))
    self.assertEqual(summary(workdir), summary(self.reference))

  def test_unshared_workdir_fails_fast_and_says_why(self):
    own = [tempfile.mkdtemp(), tempfile.mkdtemp()]  # As if each host had its own disk.
    port = mp.free_port()
    codes, logdir = run(lambda i: loop_args(own[i], port, 2)(i), 2, 2, deadline_s=180)
    self.assertEqual([c != 0 for c in codes], [True, True])
    self.assertIn("is not shared", mp.tails(logdir, 2))


if __name__ == "__main__":
  absltest.main()
