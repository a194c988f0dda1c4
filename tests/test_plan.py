"""The fit check: real programs compiled for TPU topologies by libtpu, on this CPU."""

import dataclasses
import math
import os
import subprocess
import sys

from absl.testing import absltest

from restem_jax.engine import partitioning, planning
from restem_jax.engine.config import ConfigError, ModelConfig
from restem_jax.engine.partitioning import MeshConfig, make_mesh
from restem_jax.engine.collectives import collective_bytes
from restem_jax.engine.engine import Engine
from restem_jax.engine.sampler import Sampler, SamplingConfig
from restem_jax.engine.trainer import OptimizerConfig, Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = partitioning.DEFAULT_RULES
SMALL = ModelConfig(vocab_size=1024, embed_dim=256, num_layers=2, num_heads=4, num_kv_heads=1,
                    head_dim=64, mlp_dim=1024, dtype="bfloat16")
ADAMW = OptimizerConfig(name="adamw", max_grad_norm=0.0)


def plan_cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "restem_jax.plan", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)


class PlanningTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tpu = planning.tpu_slice("v5e:2x2")
    cls.data_mesh = make_mesh(MeshConfig(), cls.tpu.devices)  # data=4: parameters replicated.

  def test_slice_has_the_chips_published_figures(self):
    self.assertLen(self.tpu.devices, 4)
    self.assertEqual(self.tpu.chip.name, "v5e")
    self.assertEqual(self.tpu.hbm_bytes, 16 * 1024 ** 3)
    v4 = planning.tpu_slice("v4:2x2x1")  # 4 chips of 2 TensorCores: a device is half a chip.
    self.assertEqual(v4.devices_per_chip, len(v4.devices) // 4)
    self.assertEqual(v4.hbm_bytes, 32 * 1024 ** 3 / v4.devices_per_chip)
    with self.assertRaisesRegex(ConfigError, "GENERATION:SHAPE"):
      planning.tpu_slice("v5e-16")

  def test_one_host_topologies_single_chips_included(self):
    for topology, devices, hbm_gib in (("v5e:1x1", 1, 16), ("v6e:1x1", 1, 32), ("v5e:2x2", 4, 16),
                                       ("v5e:2x4", 8, 16), ("v6e:2x4", 8, 32),
                                       ("v5e:4x4", 16, 16)):
      with self.subTest(topology):
        tpu = planning.tpu_slice(topology)
        self.assertLen(tpu.devices, devices)
        self.assertEqual(tpu.hbm_bytes, hbm_gib * 1024 ** 3)
    # libtpu's default host (2x2x1) does not tile a single chip: one host is the slice.
    self.assertEqual(planning.chips_per_host_bounds("1x1"), (1, 1, 1))
    self.assertEqual(planning.chips_per_host_bounds("1x2"), (1, 2, 1))
    for shape in ("2x2", "2x4", "4x4", "2x2x1", "2x2x4"):
      self.assertIsNone(planning.chips_per_host_bounds(shape), shape)

  def test_microbatches_lower_train_step_memory_and_the_fewest_that_fit_are_found(self):
    rows, seq = 64, 256
    plans = {k: planning.plan_train_step(SMALL, ADAMW, self.data_mesh, RULES, rows, seq,
                                         self.tpu, estimates=False, grad_accum_steps=k)
             for k in (1, 2, 4, 8)}
    self.assertIn("as 4 microbatches of 16 rows", plans[4].shape)
    for k in (2, 4, 8):  # Memory falls with the microbatch; the state does not change.
      self.assertLess(plans[k].peak_bytes, plans[k // 2].peak_bytes)
      self.assertEqual(plans[k].parts["parameters"], plans[1].parts["parameters"])
    # A chip just too small for 2 microbatches: the search names 4, the fewest that fit.
    chip = dataclasses.replace(self.tpu, chip=dataclasses.replace(
        self.tpu.chip, hbm_bytes=(plans[2].peak_bytes + plans[4].peak_bytes) / 2))
    steps, fitting = planning.fitting_grad_accum_steps(SMALL, ADAMW, self.data_mesh, RULES,
                                                       rows, seq, chip)
    self.assertEqual(steps, 4)
    self.assertTrue(fitting.fits(chip))
    self.assertFalse(plans[2].fits(chip))
    # Microbatches must still split over the 4 data-parallel devices: 16 (of 4 rows) is the
    # most tried, and with none fitting it is returned, not fitting.
    too_small = dataclasses.replace(self.tpu, chip=dataclasses.replace(self.tpu.chip,
                                                                       hbm_bytes=1024))
    steps, fitting = planning.fitting_grad_accum_steps(SMALL, ADAMW, self.data_mesh, RULES,
                                                       rows, seq, too_small)
    self.assertEqual(steps, 16)
    self.assertFalse(fitting.fits(too_small))
    self.assertIsNone(planning.fitting_grad_accum_steps(SMALL, ADAMW, self.data_mesh, RULES,
                                                        rows, seq, too_small, start=16))

  def test_microbatch_costs_count_every_microbatch(self):
    plain = dataclasses.replace(SMALL, remat=False)
    rows, seq = 16, 128
    split = planning.plan_train_step(plain, ADAMW, self.data_mesh, RULES, rows, seq, self.tpu,
                                     grad_accum_steps=4)
    # XLA counts the microbatch loop's body once; the plan counts all 4 microbatches: the
    # FLOPs of the step fully unrolled (layers and microbatches), and the architecture's.
    unrolled = Trainer(dataclasses.replace(plain, scan_unroll=2), ADAMW, self.data_mesh, RULES,
                       grad_accum_steps=4, unroll_microbatches=True)
    flops, _, _ = planning._costs(unrolled.compile_ahead(rows, seq))
    self.assertAlmostEqual(split.costs["step"][0] / flops, 1.0, delta=0.01)
    self.assertBetween(split.costs["step"][0] / split.flops["step"], 0.95, 1.2)

  def test_train_step_memory_and_every_layers_flops(self):
    rows, seq = 16, 128
    # Without remat, whose recomputation XLA partly elides (its count is then
    # ~5% under the architecture's 3 passes + the layers' forward again).
    plans = {layers: planning.plan_train_step(
        dataclasses.replace(SMALL, num_layers=layers, remat=False), ADAMW, self.data_mesh, RULES,
        rows, seq, self.tpu) for layers in (2, 4)}
    for layers, plan in plans.items():
      params = dataclasses.replace(SMALL, num_layers=layers).num_params
      self.assertTrue(plan.fits(self.tpu))
      self.assertEqual(plan.parts["parameters"], params * 4)  # float32, replicated.
      # AdamW keeps two moments shaped like the parameters (and a step count).
      self.assertBetween(plan.parts["optimizer state"], 2 * params * 4, 2 * params * 4 + 64)
      self.assertGreaterEqual(plan.peak_bytes, plan.parts["parameters"]
                              + plan.parts["optimizer state"])
      # Forward and backward: about 6 FLOPs per parameter and token, split over 4 devices.
      flops, nbytes, moved = plan.costs["step"]
      self.assertBetween(flops / (6 * params * rows * seq / 4), 1.0, 1.3)
      # Replicated parameters: each gradient is all-reduced once a step, most in bfloat16.
      self.assertBetween(moved / (params * 2), 1.0, 2.0)
      self.assertGreater(nbytes, plan.parts["parameters"])
      # The architecture's count agrees with XLA's where XLA adds no loops (no FSDP).
      self.assertBetween(flops / plan.flops["step"], 0.95, 1.2)
      self.assertAlmostEqual(plan.seconds["step"], planning.roofline(
          max(flops, plan.flops["step"]), nbytes, self.tpu, moved))
    # Costs count every layer, not the scan's body once: the 1- and 2-layer
    # extrapolation matches a fully unrolled program.
    four = dataclasses.replace(SMALL, num_layers=4, remat=False)
    unrolled = Trainer(dataclasses.replace(four, scan_unroll=4), ADAMW, self.data_mesh, RULES)
    flops, nbytes, _ = planning._costs(unrolled.compile_ahead(rows, seq))
    self.assertAlmostEqual(plans[4].costs["step"][0] / flops, 1.0, delta=0.01)
    self.assertAlmostEqual(plans[4].costs["step"][1] / nbytes, 1.0, delta=0.05)

  def test_fsdp_shards_parameters_and_optimizer_state(self):
    fsdp = make_mesh(MeshConfig(data=1, fsdp=-1), self.tpu.devices)
    replicated, sharded = (planning.plan_train_step(SMALL, ADAMW, mesh, RULES, 16, 128, self.tpu,
                                                    estimates=False)
                           for mesh in (self.data_mesh, fsdp))
    for part in ("parameters", "optimizer state"):
      # Only the small norm scales stay whole on every device.
      self.assertBetween(sharded.parts[part], replicated.parts[part] / 4,
                         replicated.parts[part] / 4 + 4 * 1024 * 4)

  def test_remat_lowers_training_memory(self):
    base = dataclasses.replace(SMALL, num_layers=4, mlp_dim=4096)
    plain, remat = (planning.plan_train_step(dataclasses.replace(base, remat=flag), ADAMW,
                                             self.data_mesh, RULES, 32, 512, self.tpu,
                                             estimates=False)
                    for flag in (False, True))
    key = "activations, gradients, temporaries"
    self.assertLess(remat.parts[key], 0.8 * plain.parts[key])

  def test_sampler_kv_cache_and_decode_costs(self):
    sampling = SamplingConfig(num_samples=4, max_new_tokens=32)
    plan = planning.plan_sampler("E-step sampler", SMALL, self.data_mesh, RULES, sampling,
                                 batch=8, prompt_len=64, tpu=self.tpu, knobs="")
    self.assertTrue(plan.fits(self.tpu))
    # 8 x 4 = 32 lanes over 16 prompt slots (twice the 8 prompts whose samples fill the
    # lanes), on 4 devices: keys and values of 4 prompts of 64 tokens and 8 lanes of 32.
    per_layer = 2 * 2 * SMALL.num_kv_heads * SMALL.head_dim * (4 * 64 + 8 * 32)  # bfloat16
    self.assertEqual(plan.parts["KV cache"], SMALL.num_layers * per_layer)
    self.assertGreaterEqual(plan.peak_bytes, plan.parts["parameters"] + plan.parts["KV cache"])
    # One decode step: about 2 FLOPs per parameter for each of the 8 x 4 rows.
    step_flops = plan.costs["decode_step"][0]
    self.assertBetween(step_flops / (2 * SMALL.num_params * 8 * 4 / 4), 1.0, 1.5)
    self.assertGreater(plan.costs["prefill"][0], step_flops)
    for part, (flops, _, _) in plan.costs.items():
      self.assertBetween(flops / plan.flops[part], 0.95, 1.3, part)
    self.assertAlmostEqual(plan.rates["decode tokens/s (slice)"],
                           8 * 4 / plan.seconds["decode_step"])

  def test_the_decode_loop_gathers_no_weights_under_an_fsdp_training_mesh(self):
    fsdp = make_mesh(MeshConfig(data=1, fsdp=-1), self.tpu.devices)
    engine = Engine(SMALL, None, fsdp, RULES, max_prompt_len=64, sample_batch=8)
    self.assertEqual(dict(engine.sample_mesh.shape), {"data": 4, "fsdp": 1, "tensor": 1})
    self.assertEqual(engine.sampler.rows, 4 * 8 * 4)  # 4 lanes x sample_batch per chip.
    config = SamplingConfig(num_samples=4, max_new_tokens=16)
    weights = SMALL.num_params * 2  # bfloat16
    loop = engine.sampler.compile_ahead(config)["decode"]
    self.assertLess(collective_bytes(loop.as_text()).get("all-gather", 0), 0.02 * weights)
    # The training layout itself gathers every weight in the loop: the count sees them.
    in_place = Sampler(SMALL, fsdp, RULES, max_prompt_len=64, max_batch=8)
    loop = in_place.compile_ahead(config)["decode"]
    self.assertGreater(collective_bytes(loop.as_text())["all-gather"], weights)

  def test_the_roofline_counts_the_interconnect(self):
    # Sampling in the FSDP training layout gathers the weights every decode step; the
    # estimate must see that, and the sampling layout must be the faster one.
    sampling = SamplingConfig(num_samples=4, max_new_tokens=32)
    fsdp = make_mesh(MeshConfig(data=1, fsdp=-1), self.tpu.devices)
    in_place, own = (planning.plan_sampler("E-step sampler", SMALL, mesh, RULES, sampling,
                                           batch=8, prompt_len=64, tpu=self.tpu, knobs="")
                     for mesh in (fsdp, self.data_mesh))
    weights = SMALL.num_params * 2  # bfloat16
    self.assertGreater(in_place.costs["decode_step"][2], 0.5 * weights)
    self.assertLess(own.costs["decode_step"][2], 0.02 * weights)
    step = in_place.costs["decode_step"]
    self.assertAlmostEqual(in_place.seconds["decode_step"],
                           max(step[2] / self.tpu.ici_bandwidth,
                               planning.roofline(max(step[0], in_place.flops["decode_step"]),
                                                 step[1], self.tpu)))
    self.assertGreater(own.rates["decode tokens/s (slice)"],
                       in_place.rates["decode tokens/s (slice)"])

  def test_oversized_program_is_refused_with_xlas_figure(self):
    huge = dataclasses.replace(SMALL, vocab_size=2_000_000, embed_dim=2048)
    plan = planning.plan_train_step(huge, ADAMW, self.data_mesh, RULES, 16, 128, self.tpu,
                                    estimates=False)
    self.assertFalse(plan.fits(self.tpu))
    self.assertIn("HBM", plan.refusal)
    self.assertGreater(plan.peak_bytes, self.tpu.hbm_bytes)
    self.assertGreaterEqual(plan.peak_bytes, huge.num_params * 4 * 3)  # Params, 2 moments.
    self.assertFalse(plan.costs)

  def test_required_bytes_reads_xlas_message(self):
    message = ("Ran out of memory on HBM, the total memory required for HLO temporaries "
               "(51.04G) exceeds available HBM (15.75G).")
    self.assertEqual(planning._required_bytes(message), math.floor(51.04 * 1024 ** 3))
    message = ("E1000: CompileTimeHbmOom: XLA:TPU compile permanent error. Ran out of memory in "
               "memory space hbm. Used 15.75G of 15.75G hbm. Exceeded hbm capacity by 1.03M.")
    self.assertEqual(planning._required_bytes(message),
                     math.floor(15.75 * 1024 ** 3 + 1.03 * 1024 ** 2))
    self.assertEqual(planning._required_bytes("out of memory"), 0)


class PlanCommandTest(absltest.TestCase):

  def test_micro_run_fits_a_small_slice(self):
    result = plan_cli(f"--gin_file={ROOT}/tests/micro.gin", "--topology=v5e:2x2")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    for name in ("M-step train step", "E-step sampler", "evaluation sampler (pass@k)",
                 "evaluation sampler (greedy)"):
      self.assertIn(f"{name}: ", result.stdout)
    # sample_batch=16 per data-parallel group, 4 groups: 4 x 16 x 4 lanes, 1 sample a prompt.
    self.assertIn("evaluation sampler (greedy): 256 lanes over 512 prompt slots", result.stdout)
    self.assertRegex(result.stdout, r"Largest RestemConfig.sample_batch that every sampler fits "
                                    r"with: \d+")
    self.assertIn("roofline estimate", result.stdout)
    self.assertIn("interconnect", result.stdout)
    self.assertIn("sampling mesh: data=4 x fsdp=1 x tensor=1", result.stdout)
    self.assertIn("M-step validation sampler (greedy, beside the train state): ", result.stdout)
    self.assertIn("All 5 programs fit on v5e:2x2", result.stdout)

  def test_oversized_config_is_refused_naming_the_knobs(self):
    result = plan_cli(f"--gin_file={ROOT}/tests/micro.gin", "--topology=v5e:2x2",
                      "--gin.ModelConfig.vocab_size=2000000", "--gin.ModelConfig.embed_dim=2048",
                      "--noestimates")
    self.assertEqual(result.returncode, 1, result.stderr[-3000:])
    self.assertIn("DOES NOT FIT", result.stdout)
    self.assertIn("M-step train step needs", result.stdout)
    for knob in ("FinetuneConfig.grad_accum_steps", "FinetuneConfig.batch_size",
                 "MeshConfig.fsdp", "ModelConfig.remat"):
      self.assertIn(knob, result.stdout)
    # Parameters this large fit in no microbatch: the plan says so, with the figure, for the
    # smallest microbatch that still splits over the 4 data-parallel chips (16 / 4 rows).
    self.assertRegex(result.stdout, r"Even with FinetuneConfig.grad_accum_steps = 4 "
                                    r"\(microbatches of 4 rows\) the M-step train step needs "
                                    r"[\d.]+ GiB per device, of which parameters")

  def test_micro_run_fits_a_single_chip_in_microbatches(self):
    result = plan_cli(f"--gin_file={ROOT}/tests/micro.gin", "--topology=v5e:1x1",
                      "--gin.FinetuneConfig.grad_accum_steps=4", "--noestimates")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("v5e:1x1: 1 device (v5e, 1 per chip)", result.stdout)
    self.assertIn("M-step train step: 16 rows x 16 tokens, adamw, as 4 microbatches of 4 rows",
                  result.stdout)
    self.assertIn("All 5 programs fit on v5e:1x1", result.stdout)

  def test_bad_topology_is_a_usage_error(self):
    result = plan_cli(f"--gin_file={ROOT}/tests/micro.gin", "--topology=v5e-16")
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("GENERATION:SHAPE", result.stderr)


if __name__ == "__main__":
  absltest.main()
