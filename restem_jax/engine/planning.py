"""Will a run fit a TPU slice? Its programs compiled for a topology, with no TPU.

libtpu (the `tpu` extra) compiles for any TPU topology on any machine
(`jax.experimental.topologies`), as MaxText's `train_compile.py` does. The
compiled programs give the per-device peak memory, which decides whether a
run fits, and XLA's cost analysis, which gives FLOPs and bytes. XLA counts a
loop body once, so costs are read from probes with one and two unrolled layers
(every layer costs the same) and from one prefill and one decode step, not
from the whole sampling loop.
Times are roofline estimates from the chip's published peaks, not
measurements.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from typing import Any, Callable

import jax
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding

from restem_jax.engine import partitioning
from restem_jax.engine.collectives import collective_bytes
from restem_jax.engine.config import ConfigError, ModelConfig
from restem_jax.engine.params import abstract_params
from restem_jax.engine.sampler import Sampler, SamplingConfig, Stopping
from restem_jax.engine.trainer import OptimizerConfig, Trainer

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures: HBM, bf16 peak, HBM bandwidth (Cloud TPU system architecture
  pages) and the inter-chip interconnect's bandwidth, both directions of every link summed."""
  name: str
  hbm_bytes: float
  peak_flops: float
  hbm_bandwidth: float
  ici_bandwidth: float


# Inter-chip interconnect per chip, every link both ways. The Cloud TPU v5e, v5p and v6e pages
# state it ("Bidirectional inter-chip interconnect (ICI) bandwidth (per chip)": 400, 1200 and
# 800 GBps). The v3 and v4 pages state a pod's bisection bandwidth instead, which is what one
# direction of each link cut by halving the torus carries: that reading gives v5e's and v6e's
# stated figures back (1.6 and 3.2 TB/s over 32 links of a 16x16 torus: 50 and 100 GB/s a link,
# 4 links). v3: 6.4 TB/s over the 64 cut links of 32x32, 4 links a chip; v4: 24 TB/s over the 512
# of 16x16x16, 6 links. v2's page states neither: 4 links of 496 Gbit/s each way, as Jouppi et
# al. (CACM 2020, "A Domain Specific Supercomputer for Training Deep Neural Networks") is quoted.
ICI_V2 = 4 * 2 * 496e9 / 8
ICI_V3 = 4 * 2 * 6.4e12 / 64
ICI_V4 = 6 * 2 * 24e12 / 512

# Keyed by jax's device_kind.
CHIPS = {
    "TPU v2": Chip("v2", 16 * GIB, 45e12, 600e9, ICI_V2),
    "TPU v3": Chip("v3", 32 * GIB, 123e12, 900e9, ICI_V3),
    "TPU v4": Chip("v4", 32 * GIB, 275e12, 1200e9, ICI_V4),
    "TPU v5 lite": Chip("v5e", 16 * GIB, 197e12, 819e9, 400e9),
    "TPU v5": Chip("v5p", 95 * GIB, 459e12, 2765e9, 1200e9),
    "TPU v6 lite": Chip("v6e", 32 * GIB, 918e12, 1640e9, 800e9),
}


@dataclasses.dataclass(frozen=True)
class Slice:
  """A topology's devices and what one device (a chip, or a core of a 2-core chip) has."""
  name: str
  devices: tuple[jax.Device, ...]
  chip: Chip
  devices_per_chip: int

  @property
  def hbm_bytes(self) -> float:
    return self.chip.hbm_bytes / self.devices_per_chip

  @property
  def peak_flops(self) -> float:
    return self.chip.peak_flops / self.devices_per_chip

  @property
  def hbm_bandwidth(self) -> float:
    return self.chip.hbm_bandwidth / self.devices_per_chip

  @property
  def ici_bandwidth(self) -> float:
    return self.chip.ici_bandwidth / self.devices_per_chip


def tpu_slice(topology: str) -> Slice:
  """The devices of a topology name such as "v5e:4x4" or "v4:2x2x2" (libtpu needed)."""
  match = re.fullmatch(r"[A-Za-z0-9_ ]+[:=_]([0-9x]+)(_twisted|_untwisted)?", topology)
  if not match:
    raise ConfigError(f"topology {topology!r} is not a TPU topology name; use GENERATION:SHAPE, "
                      "e.g. v5e:4x4, v5p:2x2x2, v4:2x2x1 or v6e:2x4.")
  if importlib.util.find_spec("libtpu") is None:
    raise ConfigError("planning for TPU needs libtpu: pip install 'restem_jax[tpu]' (jax[tpu]).")
  # Planning only compiles: share libtpu with a run or another plan that loaded it.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  bounds = chips_per_host_bounds(match.group(1))
  try:
    devices = topologies.get_topology_desc(
        platform="tpu", topology_name=topology,
        **({"chips_per_host_bounds": list(bounds)} if bounds else {})).devices
  except RuntimeError as e:
    raise ConfigError(f"libtpu cannot describe topology {topology!r}: {e}") from e
  kind = devices[0].device_kind
  if kind not in CHIPS:
    raise ConfigError(f"no published figures for {kind!r} here; known: {sorted(CHIPS)}.")
  chips = math.prod(int(d) for d in match.group(1).split("x"))
  return Slice(topology, tuple(devices), CHIPS[kind], max(len(devices) // chips, 1))


# libtpu's default chips per host, (x, y, z): a v4 / v5p host, and a host of a multi-host
# v5e / v6e slice (MaxText describes every slice from v5e-16 up with it).
DEFAULT_HOST_BOUNDS = (2, 2, 1)
# The most chips one TPU VM holds: v5e-8 and v6e-8 are single hosts.
MAX_CHIPS_PER_HOST = 8


def chips_per_host_bounds(shape: str) -> tuple[int, ...] | None:
  """The chips_per_host_bounds libtpu needs for a topology shape ("1x1", "4x4", "2x2x1").

  None (libtpu's default, 2x2x1) where the shape tiles with it; otherwise a slice of
  at most MAX_CHIPS_PER_HOST chips is one host, whose bounds are the shape itself:
  libtpu refuses v5e:1x1 and v6e:1x1 (a Colab or single-chip VM) with its default, as
  it is "not divisible by 2x2x1". Bounds group devices into processes only; a compiled
  program's per-device memory and costs do not depend on them. v5e:2x4 keeps the default
  (two hosts of 2x2, as MaxText describes v5e-8), though a v5e-8 VM is one host.
  """
  dims = [int(d) for d in shape.split("x")]
  dims += [1] * (len(DEFAULT_HOST_BOUNDS) - len(dims))
  if all(d % b == 0 for d, b in zip(dims, DEFAULT_HOST_BOUNDS)):
    return None
  if math.prod(dims) <= MAX_CHIPS_PER_HOST:
    return tuple(dims)
  return None  # libtpu says why it cannot describe the shape.


@dataclasses.dataclass(frozen=True)
class Program:
  """One compiled program on one device: memory, costs and a roofline estimate.

  A program XLA refuses to compile for lack of HBM has `refusal` (the
  compiler's message), the total the compiler asked for as its peak, and no
  costs.
  """
  name: str
  shape: str  # What it was compiled for, in the config's terms.
  peak_bytes: int
  parts: dict[str, int]  # Named per-device bytes inside the peak.
  # Part -> per device: XLA's FLOPs and bytes accessed, and the bytes its collectives deliver.
  costs: dict[str, tuple[float, float, float]]
  flops: dict[str, float]  # Part -> the model's FLOPs per device (`model_flops`).
  seconds: dict[str, float]  # Part -> roofline seconds.
  rates: dict[str, float]  # Derived estimates, e.g. tokens/s over the whole slice.
  knobs: str  # What to change when it does not fit.
  refusal: str = ""

  def fits(self, tpu: Slice) -> bool:
    return not self.refusal and self.peak_bytes <= tpu.hbm_bytes


def _compile(compile_fn: Callable[[], Any]) -> tuple[Any, int, str]:
  """(compiled or None, its peak or the total XLA asked for, XLA's refusal).

  `compile_fn` may return several programs by name: their peak is the largest."""
  try:
    compiled = compile_fn()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    message = str(e).split("RESOURCE_EXHAUSTED:", 1)[-1].strip().splitlines()[0]
    return None, _required_bytes(message), message
  programs = compiled.values() if isinstance(compiled, dict) else [compiled]
  return compiled, max(p.memory_analysis().peak_memory_in_bytes for p in programs), ""


def _required_bytes(message: str) -> int:
  """What XLA's out-of-memory message says the program needs (0 if it does not say).

  Two wordings are known: "the total memory required for HLO temporaries
  (51.04G) exceeds ..." and "Used 15.75G of 15.75G hbm. Exceeded hbm capacity
  by 1.03M."; sizes are binary.
  """
  size = r"([\d.]+)([KMGT]?)"
  value = lambda number, unit: float(number) * 1024 ** " KMGT".index(unit or " ")
  match = re.search(r"required[^(]*\(" + size + r"\)", message)
  if match:
    return int(value(*match.groups()))
  match = re.search(r"of " + size + r" hbm\. Exceeded hbm capacity by " + size, message)
  if match:
    return int(value(*match.groups()[:2]) + value(*match.groups()[2:]))
  return 0


def bounds(flops: float, bytes_accessed: float, collective_bytes: float, tpu: Slice
           ) -> dict[str, float]:
  """Seconds at the device's peak compute, HBM bandwidth and interconnect bandwidth.

  The interconnect figure is a floor: it assumes every link of the chip busy in
  both directions, where a collective over one mesh axis uses some of them.
  """
  return {"compute": flops / tpu.peak_flops, "HBM bandwidth": bytes_accessed / tpu.hbm_bandwidth,
          "interconnect": collective_bytes / tpu.ici_bandwidth}


def roofline(flops: float, bytes_accessed: float, tpu: Slice, collective_bytes: float = 0.0
             ) -> float:
  """Seconds at whichever of compute, HBM bandwidth and interconnect binds."""
  return max(bounds(flops, bytes_accessed, collective_bytes, tpu).values())


def model_flops(model: ModelConfig, rows: int, length: int, context: int, head_tokens: int, *,
                training: bool = False) -> float:
  """Matmul and attention FLOPs of `rows` x `length` tokens attending to `context` keys each.

  Counted from the architecture, as MaxText does: XLA's cost analysis counts
  once the loops it adds itself (collective matmuls under FSDP), so at scale
  it can report fewer FLOPs than the program runs. Training is three forward
  passes' worth, plus the layers' forward again with remat.
  """
  e, h, k, d = model.embed_dim, model.num_heads, model.num_kv_heads, model.head_dim
  layer_params = model.num_layers * (e * d * (2 * h + 2 * k) + 3 * e * model.mlp_dim)
  tokens = rows * length
  layers = 2 * tokens * layer_params + tokens * model.num_layers * 4 * h * d * context
  forward = layers + 2 * head_tokens * model.vocab_size * e
  return 3 * forward + layers if training and model.remat else (3 if training else 1) * forward


def _costs(compiled: Any) -> tuple[float, float, float]:
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return (float(analysis.get("flops", 0.0)), float(analysis.get("bytes accessed", 0.0)),
          float(sum(collective_bytes(compiled.as_text()).values())))


def _shard_bytes(shapes: Any, shardings: Any) -> int:
  """Bytes one device holds of a tree of arrays with these shardings."""
  return sum(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
             for x, s in zip(jax.tree.leaves(shapes), jax.tree.leaves(shardings)))


def _layer_costs(model: ModelConfig, costs_of: Callable[[ModelConfig], dict[str, Any]]
                 ) -> dict[str, tuple[float, ...]]:
  """Costs of `model`, from probes of it with 1 and 2 unrolled layers.

  XLA counts a loop body once, so the scanned program under-counts; every
  layer costs the same, so two small probes give the rest exactly (a fully
  unrolled probe would need far more memory to compile).
  """
  one, two = (costs_of(dataclasses.replace(model, num_layers=n, scan_unroll=n)) for n in (1, 2))
  more = model.num_layers - 1
  return {part: tuple(a + more * (b - a) for a, b in zip(one[part], two[part])) for part in one}


def plan_train_step(model: ModelConfig, optimizer: OptimizerConfig, mesh: Mesh,
                    rules: partitioning.Rules, rows: int, seq_len: int, tpu: Slice,
                    estimates: bool = True, grad_accum_steps: int = 1) -> Program:
  """The M-step's train step on `rows` x `seq_len` tokens, in `grad_accum_steps` microbatches
  of rows / grad_accum_steps (costs only with `estimates`)."""
  trainer = Trainer(model, optimizer, mesh, rules, grad_accum_steps=grad_accum_steps)
  compiled, peak, refusal = _compile(lambda: trainer.compile_ahead(rows, seq_len))
  params = abstract_params(trainer.model)
  opt_state = jax.eval_shape(trainer.optimizer.init, params)
  parts = {"parameters": _shard_bytes(params, trainer.param_shardings),
           "optimizer state": _shard_bytes(opt_state, trainer.state_shardings.opt_state)}
  temporaries = "activations, gradients, temporaries"
  name = "M-step train step"
  shape = f"{rows} rows x {seq_len} tokens, {optimizer.name}"
  if grad_accum_steps > 1:
    micro = rows // grad_accum_steps
    shape += f", as {grad_accum_steps} microbatches of {micro} row{'s' if micro > 1 else ''}"
  knobs = ("raise FinetuneConfig.grad_accum_steps (the same batch_size rows a step, in smaller "
           "microbatches), lower FinetuneConfig.seq_len or FinetuneConfig.batch_size, shard the "
           "parameters and optimizer state over more chips (MeshConfig.fsdp), or keep "
           "ModelConfig.remat = True (the default)")
  if compiled is None:  # XLA's figure is the whole program's, arguments included.
    parts[temporaries] = max(peak - sum(parts.values()), 0)
    return Program(name, shape, sum(parts.values()), parts, {}, {}, {}, {}, knobs, refusal)
  parts[temporaries] = max(peak - compiled.memory_analysis().argument_size_in_bytes, 0)
  if not estimates:
    return Program(name, shape, peak, parts, {}, {}, {}, {}, knobs)
  cost = _train_step_costs(model, optimizer, mesh, rules, rows, seq_len, grad_accum_steps)
  flops = model_flops(model, rows, seq_len, seq_len, rows * seq_len,
                      training=True) / len(tpu.devices)
  seconds = roofline(max(cost[0], flops), cost[1], tpu, cost[2])
  return Program(name, shape, peak, parts, {"step": cost}, {"step": flops}, {"step": seconds},
                 {"training tokens/s (slice)": rows * seq_len / seconds}, knobs)


def _train_step_costs(model: ModelConfig, optimizer: OptimizerConfig, mesh: Mesh,
                      rules: partitioning.Rules, rows: int, seq_len: int, steps: int
                      ) -> tuple[float, ...]:
  """XLA's costs of a train step of `steps` microbatches, every layer counted.

  XLA counts the microbatch loop's body once, as it does the layer loop's: a step of
  one microbatch (no loop) and one of two (the loop unrolled) give the rest, since every
  microbatch costs the same; the update is counted once.
  """
  def step(n_rows: int, n_steps: int) -> tuple[float, ...]:
    return _layer_costs(model, lambda probe: {"step": _costs(
        Trainer(probe, optimizer, mesh, rules, grad_accum_steps=n_steps,
                unroll_microbatches=True).compile_ahead(n_rows, seq_len))})["step"]
  if steps == 1:
    return step(rows, 1)
  micro = rows // steps
  one, two = step(micro, 1), step(2 * micro, 2)
  return tuple(a + (steps - 1) * (b - a) for a, b in zip(one, two))


def fitting_grad_accum_steps(model: ModelConfig, optimizer: OptimizerConfig, mesh: Mesh,
                             rules: partitioning.Rules, rows: int, seq_len: int, tpu: Slice,
                             start: int = 1) -> tuple[int, Program] | None:
  """The fewest microbatches above `start` with which the train step of `rows` rows fits,
  and its plan (fit only), searched by bisection over the divisors of `rows` whose
  microbatch still splits evenly over the mesh's batch axes (memory falls as microbatches
  shrink). When none fits: the most microbatches tried and its plan, which does not fit;
  None when no divisor is left to try.
  """
  batch_devices = math.prod(mesh.shape[a] for a in ("data", "fsdp"))
  candidates = [k for k in range(start + 1, rows + 1)
                if rows % k == 0 and (rows // k) % batch_devices == 0]
  if not candidates:
    return None
  plans: dict[int, Program] = {}

  def plan_at(k: int) -> Program:
    if k not in plans:
      plans[k] = plan_train_step(model, optimizer, mesh, rules, rows, seq_len, tpu,
                                 estimates=False, grad_accum_steps=k)
    return plans[k]

  low, high = 0, len(candidates) - 1
  if not plan_at(candidates[high]).fits(tpu):
    return candidates[high], plans[candidates[high]]
  while low < high:  # candidates[high] fits; find the first that does.
    middle = (low + high) // 2
    if plan_at(candidates[middle]).fits(tpu):
      high = middle
    else:
      low = middle + 1
  return candidates[high], plan_at(candidates[high])


def with_resident(program: Program, name: str, resident: dict[str, int], knobs: str) -> Program:
  """`program` run while other arrays stay in memory, as an M-step's validation check samples
  beside the train state: the same costs, more memory."""
  return dataclasses.replace(program, name=name, knobs=knobs,
                             peak_bytes=program.peak_bytes + sum(resident.values()),
                             parts={**resident, **program.parts})


def _kv_bytes(model: ModelConfig, mesh: Mesh, rules: partitioning.Rules, slots: int, rows: int,
              prompt_len: int, sampling: SamplingConfig) -> int:
  """The sampler's KV cache on one device: each slot's prompt keys once, each lane's own."""
  dtype = jax.numpy.dtype(model.dtype)
  l, k, d = model.num_layers, model.num_kv_heads, model.head_dim
  arrays = [((slots, k, prompt_len, d), ("act_batch", "act_kv_heads", None, None)),
            ((rows, 1, k, sampling.max_new_tokens, d),
             ("act_batch", "act_samples", "act_kv_heads", None, None))]
  total = 0
  for shape, names in arrays:
    sharding = NamedSharding(mesh, partitioning.spec_for(shape, names, mesh, rules))
    total += 2 * l * math.prod(sharding.shard_shape(shape)) * dtype.itemsize  # Keys and values.
  return total


def plan_sampler(name: str, model: ModelConfig, mesh: Mesh, rules: partitioning.Rules,
                 sampling: SamplingConfig, batch: int, prompt_len: int, tpu: Slice,
                 knobs: str, estimates: bool = True) -> Program:
  """The sampler at its largest bucket: `batch` slots of `prompt_len` tokens.

  `mesh` is the sampling mesh (`sampling_layout`), with the weights as decoding reads them.
  Memory is the larger of the prefill's and the decode loop's peaks.
  """
  sampler = Sampler(model, mesh, rules, max_prompt_len=prompt_len, max_batch=batch)
  slots, rows = sampler.slots_for(sampling, prompt_len), sampler.rows
  stopping = Stopping((0,))
  compiled, peak, refusal = _compile(lambda: sampler.compile_ahead(sampling, stopping))
  kv = _kv_bytes(model, mesh, rules, slots, rows, prompt_len, sampling)
  weights = _shard_bytes(sampler.abstract_params, sampler.param_shardings)
  parts = {"parameters": weights, "KV cache": kv}
  shape = (f"{rows} lanes over {slots} prompt slots ({sampling.num_samples} samples each), "
           f"{prompt_len} prompt + {sampling.max_new_tokens} new tokens")
  if compiled is None:  # XLA's figure is the whole program's, arguments included.
    parts["other temporaries"] = max(peak - sum(parts.values()), 0)
    return Program(name, shape, sum(parts.values()), parts, {}, {}, {}, {}, knobs, refusal)
  parts["other temporaries"] = max(peak - weights - kv, 0)
  if not estimates:
    return Program(name, shape, peak, parts, {}, {}, {}, {}, knobs)

  def costs_of(probe: ModelConfig) -> dict[str, tuple[float, float]]:
    compiled = Sampler(probe, mesh, rules, max_prompt_len=prompt_len, max_batch=batch
                       ).compile_ahead(sampling, stopping, parts=True)
    return {part: _costs(program) for part, program in compiled.items()}

  costs = _layer_costs(model, costs_of)
  # Prefill runs the head at each prompt's last position; a step attends to prompt and samples.
  refill = sampler.refill_for(slots, prompt_len)
  flops = {"prefill": model_flops(model, refill, prompt_len, prompt_len, refill),
           "decode_step": model_flops(model, rows, 1, prompt_len + sampling.max_new_tokens, rows)}
  flops = {part: f / len(tpu.devices) for part, f in flops.items()}
  seconds = {part: roofline(max(cost[0], flops[part]), cost[1], tpu, cost[2])
             for part, cost in costs.items()}
  # Every prompt is prefilled once and every sample decoded on its own lane.
  per_sample = (seconds["prefill"] / refill / sampling.num_samples
                + sampling.max_new_tokens * seconds["decode_step"] / rows)
  return Program(name, shape, peak, parts, costs, flops, seconds,
                 {"decode tokens/s (slice)": rows / seconds["decode_step"],
                  "samples/s at full length (slice)": 1 / per_sample}, knobs)
