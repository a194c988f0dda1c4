"""Algorithm 1 end to end on the micro task: artefacts, cap, reset-to-base, metrics."""

import dataclasses
import gc
import glob
import json
import os
import tempfile

import gin
import jax
import numpy as np
from absl.testing import absltest

from restem_jax.checkpoint_io import checkpoints
from restem_jax.restem import e_step, m_step
from restem_jax.engine import partitioning
from restem_jax.engine.config import ModelConfig
from restem_jax.engine.engine import Engine
from restem_jax.engine.trainer import Trainer

MICRO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "micro.gin")


def run_micro(workdir, *bindings):
  from restem_jax import configurables  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  gin.parse_config_files_and_bindings([MICRO], list(bindings))
  try:
    return configurables.run(workdir)
  finally:
    gin.clear_config()


def tree_equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class LoopTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.starts = []
    original = m_step.run_m_step

    def spy(engine, trainer, start, *args, **kwargs):
      self.starts.append(jax.tree.map(np.array, start()))  # A copy: a view keeps the array.
      return original(engine, trainer, start, *args, **kwargs)

    m_step.run_m_step = spy
    self.addCleanup(setattr, m_step, "run_m_step", original)
    # At every train step: buffers shaped like the embedding that are alive,
    # and how many of them the train state holds (parameters and moments).
    # Buffers, not arrays: Orbax's save leaves extra Array objects over the
    # state's own buffers.
    self.embedding_copies = []
    step = Trainer.step

    def buffers(arrays):
      return {tuple(s.data.unsafe_buffer_pointer() for s in a.addressable_shards) for a in arrays}

    # Arrays other tests left alive (caches) are not this run's copies.
    gc.collect()
    earlier = buffers(a for a in jax.live_arrays() if not a.is_deleted())

    def counting_step(trainer, state, batch):
      embedding = state.params["embedding"]
      gc.collect()  # Unreachable arrays are not copies anyone holds.
      alive = buffers(a for a in jax.live_arrays() if not a.is_deleted() and
                      a.shape == embedding.shape and a.dtype == embedding.dtype) - earlier
      in_state = buffers(a for a in jax.tree.leaves(state) if a.shape == embedding.shape)
      self.embedding_copies.append((len(alive), len(in_state)))
      return step(trainer, state, batch)

    Trainer.step = counting_step
    self.addCleanup(setattr, Trainer, "step", step)

  def restore(self, workdir, name):
    cfg = ModelConfig(vocab_size=264, embed_dim=32, num_layers=1, num_heads=2, num_kv_heads=1,
                      head_dim=16, mlp_dim=64)
    return Engine(cfg, None, partitioning.make_mesh()).restore(os.path.join(workdir, name))

  def test_full_loop_resets_to_base_and_caps(self):
    workdir = tempfile.mkdtemp()
    summary = run_micro(workdir)
    iterations = summary["iterations"]
    self.assertEqual([m["iteration"] for m in iterations], [0, 1, 2])
    for key in ("test_pass@1", "val_reward", "train_solve_rate", "num_kept", "pass@k", "maj@k"):
      self.assertIn(key, iterations[1])
    self.assertEqual(set(iterations[0]["pass@k"]), {"1", "4"})
    for m in iterations:  # The curve holds every k up to the 4 samples, pass@k among them.
      self.assertLen(m["pass@k_curve"], 4)
      self.assertEqual([m["pass@k_curve"][k - 1] for k in (1, 4)],
                       [m["pass@k"]["1"], m["pass@k"]["4"]])
      self.assertEqual(m["pass@k_curve"], sorted(m["pass@k_curve"]))
    self.assertIn(summary["best_iteration"], (0, 1, 2))
    best_val = max(m["val_reward"] for m in iterations)
    self.assertEqual(iterations[summary["best_iteration"]]["val_reward"], best_val)
    self.assertIn("control", summary)

    # While any model trains (base, M-steps, control), the train state holds
    # the only parameters: no base, previous iterate or start copy is alive.
    self.assertNotEmpty(self.embedding_copies)
    for alive, in_state in self.embedding_copies:
      self.assertEqual(alive, in_state)

    # Every M-step starts from the base checkpoint.
    base = self.restore(workdir, "base")
    self.assertLen(self.starts, 2)
    for start in self.starts:
      self.assertTrue(tree_equal(start, base))

    for i in (1, 2):
      samples = [dataclasses.asdict(s)
                 for f in sorted(glob.glob(f"{workdir}/iter_{i}/samples/*.jsonl"))
                 for s in e_step.read_samples(f)]
      self.assertLen(samples, 40 * 4)  # 48 train problems minus 8 validation, 4 samples each.
      self.assertEqual(set(samples[0]), {"problem_id", "prompt", "completion", "reward",
                                         "logprob", "iteration", "sample_index"})
      kept = [dataclasses.asdict(s)
              for s in e_step.read_samples(f"{workdir}/iter_{i}/kept.jsonl")]
      self.assertEqual(len(kept), iterations[i]["num_kept"])
      self.assertTrue(all(s["reward"] == 1.0 for s in kept))
      per_problem = {}
      for s in kept:
        per_problem[s["problem_id"]] = per_problem.get(s["problem_id"], 0) + 1
      self.assertLessEqual(max(per_problem.values()), 2)  # max_per_problem = 2
      correct = {}
      for s in samples:
        correct[s["problem_id"]] = correct.get(s["problem_id"], 0) + (s["reward"] == 1.0)
      self.assertEqual(len(kept), sum(min(c, 2) for c in correct.values()))
      self.assertTrue(checkpoints.exists(f"{workdir}/iter_{i}/checkpoint"))
      self.assertFalse(os.path.exists(f"{workdir}/iter_{i}/m_step"))
    self.assertTrue(glob.glob(f"{workdir}/tensorboard/events.out.tfevents.*"))
    with open(f"{workdir}/pass_at_1.png", "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

  def test_m_step_steps_in_microbatches_with_the_whole_batchs_loss_and_gradients(self):
    # FinetuneConfig.grad_accum_steps reaches the M-step (and the SFT control) through the
    # loop; the micro M-step's 16 rows go as 4 microbatches of 4 rows.
    seen = []
    step = Trainer.step  # setUp's counting step.

    def recording_step(trainer, state, batch):
      if trainer.grad_accum_steps > 1 and len(seen) < 2:
        before = jax.tree.map(np.array, state)  # The step donates its state.
        new_state, metrics = step(trainer, state, batch)
        seen.append((trainer, before, batch, metrics, jax.tree.map(np.array, new_state)))
        return new_state, metrics
      return step(trainer, state, batch)

    Trainer.step = recording_step  # setUp's cleanup restores the original.
    summary = run_micro(tempfile.mkdtemp(), "FinetuneConfig.grad_accum_steps = 4",
                        "RestemConfig.iterations = 1", "RestemConfig.sft_control = False")
    self.assertLen(summary["iterations"], 2)
    self.assertLen(seen, 2)
    for trainer, before, batch, metrics, after in seen:
      self.assertEqual(trainer.grad_accum_steps, 4)
      self.assertLen(batch["tokens"], 16)
      whole = Trainer(trainer.model.cfg, trainer.optimizer_config, trainer.mesh, trainer.rules)
      self.assertEqual(whole.grad_accum_steps, 1)
      loss, grads = whole.gradients(before.params, batch)
      self.assertAlmostEqual(metrics["loss"], loss, delta=1e-5)
      split_loss, split_grads = trainer.gradients(before.params, batch)
      self.assertAlmostEqual(split_loss, loss, delta=1e-5)
      for x, y in zip(jax.tree.leaves(split_grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)
      # The step's optimizer saw the whole batch's gradient: AdamW's moments after it equal
      # those of the same state stepped unsplit. (Not the parameters: Adam's early steps are
      # about lr * sign(gradient), which turns float noise in a near-zero gradient into a
      # full step.)
      reference, _ = whole.step(jax.tree.map(jax.numpy.asarray, before), batch)
      for x, y in zip(jax.tree.leaves(after.opt_state), jax.tree.leaves(reference.opt_state)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)

  def test_a_run_stopped_mid_m_step_resumes_to_the_same_summary_with_microbatches(self):
    bindings = ("FinetuneConfig.grad_accum_steps = 4", "RestemConfig.iterations = 1",
                "RestemConfig.sft_control = False")
    reference = tempfile.mkdtemp()
    run_micro(reference, *bindings)
    workdir = tempfile.mkdtemp()
    step = Trainer.step
    calls = []

    class Stop(Exception):
      pass

    progress = os.path.join(workdir, "iter_1", "m_step", "progress.json")

    def stopping_step(trainer, state, batch):
      self.assertEqual(trainer.grad_accum_steps, 4)  # The base's training too (unscoped).
      if os.path.exists(progress):  # Iteration 1's M-step, after its check at step 10.
        calls.append(1)
        if len(calls) == 5:
          raise Stop()
      return step(trainer, state, batch)

    Trainer.step = stopping_step
    with self.assertRaises(Stop):
      run_micro(workdir, *bindings)
    Trainer.step = step
    with open(progress) as f:
      self.assertEqual(json.load(f)["step"], 10)
    self.assertFalse(os.path.exists(os.path.join(workdir, "summary.json")))
    run_micro(workdir, *bindings)

    def load(path):
      with open(os.path.join(path, "summary.json")) as f:
        return json.load(f)

    self.assertEqual(load(workdir), load(reference))
    with open(os.path.join(workdir, "iter_1", "m_step.json")) as f, \
         open(os.path.join(reference, "iter_1", "m_step.json")) as g:
      self.assertEqual(json.load(f), json.load(g))  # Every check's loss and score.

  def test_continue_from_previous_iterate(self):
    workdir = tempfile.mkdtemp()
    run_micro(workdir, "RestemConfig.reset_to_base = False", "RestemConfig.sft_control = False")
    self.assertLen(self.starts, 2)
    self.assertTrue(tree_equal(self.starts[0], self.restore(workdir, "base")))
    self.assertTrue(tree_equal(self.starts[1], self.restore(workdir, "iter_1/checkpoint")))
    self.assertFalse(tree_equal(self.starts[1], self.starts[0]))


if __name__ == "__main__":
  absltest.main()
