r"""Fit check before renting a pod: compile a run's programs for a TPU topology here.

  python -m restem_jax.plan --gin_file=gin_configs/models/gemma_2b.gin \
      --gin_file=gin_configs/math.gin --topology=v5e:4x4 [--gin.X=Y]

Needs libtpu (`pip install 'restem_jax[tpu]'`), not a TPU. Compiles the
M-step train step (in the gin files' mesh) and the E-step, pass@k and greedy
samplers (in the sampling layout the engine chooses, `sampling_layout`) at
their largest shapes for the topology's devices, checks the greedy sampler
again beside the train state (an M-step's validation check), and prints per
device: parameters, optimizer state, KV cache and temporaries against HBM;
FLOPs and bytes from XLA's cost analysis and the bytes its collectives
deliver, read from the compiled programs; and roofline estimates of step
time and tokens/s from the chip's published compute, HBM and interconnect
figures. Exits with status 1, naming the settings to change, when a program
does not fit.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NamedTuple, Sequence

from absl import app, flags

from restem_jax import main as cli  # Defines --gin_file, --gin_bindings, --gin_search_paths.

# The plan compiles for a topology and runs nothing: leave the host's own
# accelerators to the runs that use them.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Past 1,024 lanes a device a decode step is compute-bound on every TPU generation (a
# step reads the weights once for all lanes): the plan looks no further.
MAX_SAMPLE_BATCH = 256
SHARD_KV = "split the weights and KV cache over more chips (MeshConfig.sample_tensor)"

TOPOLOGY = flags.DEFINE_string(
    "topology", None, "TPU topology, GENERATION:SHAPE as libtpu names it: v5e:2x2, v5e:4x4, "
    "v5p:2x2x1, v4:2x2x2, v6e:2x4, ...")
ESTIMATES = flags.DEFINE_bool(
    "estimates", True, "Also compile the cost probes (1 and 2 unrolled layers, one prefill, one "
    "decode step) for FLOPs, bytes and roofline estimates; --noestimates checks the fit only.")


def sampler_settings(restem: Any, evaluation: Any) -> list[tuple[str, Any, str]]:
  """(name, SamplingConfig, what to change if it does not fit) of the run's three samplers."""
  from restem_jax.engine.sampler import SamplingConfig  # pylint: disable=import-outside-toplevel
  e_step = SamplingConfig(num_samples=restem.num_samples, temperature=restem.temperature,
                          top_k=restem.top_k, max_new_tokens=restem.max_new_tokens)
  pass_k = SamplingConfig(num_samples=evaluation.pass_k_samples,
                          temperature=evaluation.pass_temperature, top_k=0,
                          top_p=evaluation.pass_top_p, max_new_tokens=evaluation.max_new_tokens)
  # Greedy calls (test pass@1, validation): one sample per prompt, so the most prompt slots.
  greedy = SamplingConfig(temperature=0.0, max_new_tokens=evaluation.max_new_tokens)
  return [
      ("E-step sampler", e_step,
       f"lower RestemConfig.sample_batch (each data-parallel group decodes 4 x sample_batch "
       f"lanes, over prompt slots for the prompts whose num_samples={restem.num_samples} fill "
       f"them and as many ahead), RestemConfig.max_new_tokens or max_prompt_len, or {SHARD_KV}"),
      ("evaluation sampler (pass@k)", pass_k,
       f"lower RestemConfig.sample_batch, EvalConfig.pass_k_samples or "
       f"EvalConfig.max_new_tokens, or {SHARD_KV}"),
      ("evaluation sampler (greedy)", greedy,
       f"lower RestemConfig.sample_batch (a greedy call holds the keys of 4 x sample_batch "
       f"prompts per data-parallel group and those prefilled ahead) or "
       f"RestemConfig.max_prompt_len, or {SHARD_KV}")]


class Plan(NamedTuple):
  """What `plan` found: the programs, in the meshes they run in, and the sampler's headroom."""
  tpu: Any
  meshes: dict[str, Any]
  model: Any
  programs: list[Any]
  # The largest RestemConfig.sample_batch every sampler fits with (None: not measured).
  largest_sample_batch: int | None
  # When the train step does not fit: the fewest FinetuneConfig.grad_accum_steps that fits
  # (or the most tried, if none does), its microbatch's rows and that train step's plan
  # (None: not searched).
  grad_accum: tuple[int, int, Any] | None = None


def plan(topology: str, estimates: bool = True) -> Plan:
  """Plans the run that the parsed gin configuration describes."""
  # pylint: disable=import-outside-toplevel
  from restem_jax import configurables
  from restem_jax.engine import planning, sampling_layout
  from restem_jax.engine.config import ModelConfig
  from restem_jax.engine.partitioning import MeshConfig, make_mesh
  from restem_jax.engine.trainer import OptimizerConfig
  from restem_jax.restem.evaluation import EvalConfig
  from restem_jax.restem.finetune import FinetuneConfig
  from restem_jax.restem.loop import RestemConfig

  build = configurables.build
  model, mesh_config, restem = build(ModelConfig), build(MeshConfig), build(RestemConfig)
  m_step, evaluation = build(FinetuneConfig), build(EvalConfig)
  tpu = planning.tpu_slice(topology)
  mesh, rules = make_mesh(mesh_config, tpu.devices), mesh_config.rules
  sample_mesh = sampling_layout.sampling_mesh(mesh, model, mesh_config.sample_tensor,
                                              tpu.hbm_bytes)
  samplers = sampler_settings(restem, evaluation)
  groups = sample_mesh.shape["data"]

  def sampler_at(name, config, knobs, sample_batch, estimates):
    return planning.plan_sampler(name, model, sample_mesh, rules, config, sample_batch * groups,
                                 restem.max_prompt_len, tpu, knobs, estimates)

  optimizer = build(OptimizerConfig)
  programs = [planning.plan_train_step(model, optimizer, mesh, rules, m_step.batch_size,
                                       m_step.seq_len, tpu, estimates, m_step.grad_accum_steps)]
  grad_accum = None
  if not programs[0].fits(tpu):  # Smaller microbatches, the same effective batch?
    found = planning.fitting_grad_accum_steps(model, optimizer, mesh, rules, m_step.batch_size,
                                              m_step.seq_len, tpu, start=m_step.grad_accum_steps)
    if found:
      grad_accum = (found[0], m_step.batch_size // found[0], found[1])
  programs += [sampler_at(*sampler, restem.sample_batch, estimates) for sampler in samplers]
  train_state = {"train state (parameters, optimizer state)":
                 programs[0].parts["parameters"] + programs[0].parts["optimizer state"]}
  programs.append(planning.with_resident(
      programs[-1], "M-step validation sampler (greedy, beside the train state)", train_state,
      f"lower RestemConfig.sample_batch, shard the train state over more chips "
      f"(MeshConfig.fsdp), or {SHARD_KV}"))
  largest = None
  if (estimates and 1 < restem.sample_batch < MAX_SAMPLE_BATCH
      and all(p.fits(tpu) for p in programs)):
    resident = sum(train_state.values())

    def fits(sample_batch: int) -> bool:
      at = [sampler_at(*sampler, sample_batch, False) for sampler in samplers]
      return all(p.fits(tpu) for p in at) and at[-1].peak_bytes + resident <= tpu.hbm_bytes

    # Sampler memory grows about linearly with sample_batch: a compile at half the batch
    # (which fits: an over-large program's figure would be XLA's partial one) gives the
    # slope; the estimate is then compiled, and lowered until every sampler fits.
    half = restem.sample_batch // 2
    at_half = [sampler_at(*sampler, half, False) for sampler in samplers]
    room = [tpu.hbm_bytes - p.peak_bytes for p in programs[1:4]]
    room[-1] -= resident
    largest = min([MAX_SAMPLE_BATCH] + [
        restem.sample_batch + int(free * (restem.sample_batch - half) // max(
            once.peak_bytes - low.peak_bytes, 1))
        for free, once, low in zip(room, programs[1:4], at_half)])
    while largest > restem.sample_batch and not fits(largest):
      largest = max(restem.sample_batch, largest * 7 // 8)
  return Plan(tpu, {"training": mesh, "sampling": sample_mesh}, model, programs, largest,
              grad_accum)


def _gib(n: float) -> str:
  return f"{n / 1024 ** 3:.2f} GiB" if n >= 1024 ** 3 / 10 else f"{n / 1024 ** 2:.1f} MiB"


def _si(n: float, unit: str) -> str:
  for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if n >= scale:
      return f"{n / scale:.3g} {prefix}{unit}"
  return f"{n:.3g} {unit}"


def report(plan_: Plan) -> str:
  """The plan as text: per-device memory against HBM, costs, estimates, verdicts."""
  from restem_jax.engine import planning  # pylint: disable=import-outside-toplevel
  tpu, meshes, model, programs = plan_[:4]
  lines = [
      f"{tpu.name}: {len(tpu.devices)} device{'s' if len(tpu.devices) > 1 else ''} "
      f"({tpu.chip.name}, {tpu.devices_per_chip} per chip); "
      f"per device {_gib(tpu.hbm_bytes)} HBM, {_si(tpu.peak_flops, 'FLOP/s')} bf16 peak, "
      f"{_si(tpu.hbm_bandwidth, 'B/s')} HBM bandwidth, {_si(tpu.ici_bandwidth, 'B/s')} "
      "interconnect (all links, both ways)",
      *(f"{use} mesh: " + " x ".join(f"{name}={size}" for name, size in mesh.shape.items())
        for use, mesh in meshes.items()),
      f"model: {_si(model.num_params, '')}parameters ({model.param_dtype} weights, "
      f"{model.dtype} compute, remat={model.remat}); samplers read {model.dtype} copies", ""]
  for p in programs:
    verdict = "fits" if p.fits(tpu) else "DOES NOT FIT"
    lines.append(f"{p.name}: {p.shape}")
    lines.append(f"  memory per device: {_gib(p.peak_bytes)} of {_gib(tpu.hbm_bytes)} "
                 f"({100 * p.peak_bytes / tpu.hbm_bytes:.0f}%), {verdict}")
    if p.refusal:
      lines.append(f"  XLA refused to compile it: {p.refusal}")
    width = max(len(name) for name in p.parts)
    lines += [f"    {name:<{width}}  {_gib(size)}" for name, size in p.parts.items()]
    for part, (flops, nbytes, moved) in p.costs.items():
      seconds = planning.bounds(max(flops, p.flops[part]), nbytes, moved, tpu)
      lines.append(f"  {part} per device: XLA counts {_si(flops, 'FLOP')} and "
                   f"{_si(nbytes, 'B')} accessed, collectives deliver {_si(moved, 'B')}; "
                   f"the model has {_si(p.flops[part], 'FLOP')}")
      if flops < 0.9 * p.flops[part]:
        lines.append("    (XLA counts once the loops it adds for sharded matmuls; the "
                     "estimate uses the model's FLOPs)")
      lines.append(f"    roofline estimate {p.seconds[part] * 1e3:.3g} ms "
                   f"({max(seconds, key=seconds.get)}-bound; "
                   + ", ".join(f"{name} {t * 1e3:.3g} ms" for name, t in seconds.items()) + ")")
    lines += [f"  estimate: {name} {_si(rate, '')}" for name, rate in p.rates.items()]
    lines.append("")
  if plan_.largest_sample_batch is not None:
    lines += [f"Largest RestemConfig.sample_batch that every sampler fits with: "
              f"{plan_.largest_sample_batch} (per data-parallel group of the sampling mesh; "
              f"compiled; the plan looks no further than {MAX_SAMPLE_BATCH})", ""]
  if plan_.grad_accum is not None:
    steps, micro, train = plan_.grad_accum
    rows = f"microbatches of {micro} row{'s' if micro > 1 else ''}"
    if train.fits(tpu):
      lines += [f"FinetuneConfig.grad_accum_steps = {steps} fits the M-step train step "
                f"({rows}, the same batch per step): {_gib(train.peak_bytes)} per device "
                f"of {_gib(tpu.hbm_bytes)}.", ""]
    else:
      lines += [f"Even with FinetuneConfig.grad_accum_steps = {steps} ({rows}) the M-step "
                f"train step needs {_gib(train.peak_bytes)} per device, of which "
                + ", ".join(f"{name} {_gib(size)}" for name, size in train.parts.items())
                + ".", ""]
  failed = [p for p in programs if not p.fits(tpu)]
  if not failed:
    lines.append(f"All {len(programs)} programs fit on {tpu.name}."
                 + (" Estimates assume peak FLOP/s or bandwidth; real steps are slower."
                    if any(p.costs for p in programs) else ""))
  for p in failed:
    lines.append(f"{p.name} needs {_gib(p.peak_bytes)} per device; a {tpu.chip.name} device "
                 f"has {_gib(tpu.hbm_bytes)}, of which XLA keeps some for itself: {p.knobs}.")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not TOPOLOGY.value:
    raise app.UsageError("--topology is required, e.g. --topology=v5e:4x4")
  if not cli.GIN_FILES.value:
    raise app.UsageError("give the run's --gin_file(s), e.g. gin_configs/models/gemma_2b.gin "
                         "and gin_configs/math.gin")
  cli.parse_gin(cli.GIN_FILES.value, cli.BINDINGS.value, cli.SEARCH_PATHS.value)
  from restem_jax.engine.config import ConfigError  # pylint: disable=import-outside-toplevel
  try:
    result = plan(TOPOLOGY.value, ESTIMATES.value)
  except ConfigError as e:
    raise app.UsageError(str(e)) from e
  print(report(result), flush=True)
  if not all(p.fits(result.tpu) for p in result.programs):
    sys.exit(1)


def run() -> None:
  """Console-script entry point."""
  app.run(main, argv=cli.rewrite_gin_flags(sys.argv))


if __name__ == "__main__":
  run()
