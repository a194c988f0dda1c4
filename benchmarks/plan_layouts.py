"""Sampling in the training layout vs the sampling layout, as the plan estimates them for a TPU.

Compiles, for the gin files' run on a topology (no TPU needed), the E-step,
pass@k and greedy samplers twice: in the training mesh with
`RestemConfig.sample_batch` lanes' worth for the whole slice (how the engine
sampled before `sampling_layout`), and in the sampling mesh with
sample_batch per data-parallel group (how it samples now). Prints memory per
chip, the collective bytes a decode step moves, and the interconnect-aware
roofline's decode tokens/s, for the slice and per chip.

  python benchmarks/plan_layouts.py --gin_file=gin_configs/models/gemma_2b.gin \\
      --gin_file=gin_configs/math.gin --topology=v5e:4x4 [--before_sample_batch=16]
"""

from __future__ import annotations

import os

from absl import app, flags

from restem_jax import main as cli  # Defines --gin_file, --gin_bindings, --gin_search_paths.
from restem_jax import plan  # Defines --topology.

os.environ.setdefault("JAX_PLATFORMS", "cpu")

_BEFORE_BATCH = flags.DEFINE_integer(
    "before_sample_batch", None, "sample_batch of the training-layout run (the slice's; "
    "default: the gin files' value).")


def main(argv) -> None:
  del argv
  cli.parse_gin(cli.GIN_FILES.value, cli.BINDINGS.value, cli.SEARCH_PATHS.value)
  # pylint: disable=import-outside-toplevel
  from restem_jax import configurables
  from restem_jax.engine import planning
  from restem_jax.engine.partitioning import MeshConfig
  from restem_jax.restem.evaluation import EvalConfig
  from restem_jax.restem.loop import RestemConfig

  result = plan.plan(plan.TOPOLOGY.value)
  restem, evaluation = configurables.build(RestemConfig), configurables.build(EvalConfig)
  rules = configurables.build(MeshConfig).rules
  training, sampling = result.meshes["training"], result.meshes["sampling"]
  chips = len(result.tpu.devices) / result.tpu.devices_per_chip
  print(f"{plan.TOPOLOGY.value}; training mesh {dict(training.shape)}, sampling mesh "
        f"{dict(sampling.shape)}; sample_batch {restem.sample_batch} per group now, "
        f"largest that fits {result.largest_sample_batch}")
  for (name, config, _), after in zip(plan.sampler_settings(restem, evaluation),
                                      result.programs[1:4]):
    before = planning.plan_sampler(name, result.model, training, rules, config,
                                   _BEFORE_BATCH.value or restem.sample_batch,
                                   restem.max_prompt_len, result.tpu, "")
    for label, p in (("training layout", before), ("sampling layout", after)):
      rate = p.rates.get("decode tokens/s (slice)", 0.0)
      moved = p.costs["decode_step"][2] if p.costs else 0.0
      print(f"{name:<28} {label:<16} {p.shape.split(',')[0]:<34} "
            f"{p.peak_bytes / 1024 ** 3:6.2f} GiB/chip  step moves {moved / 1e9:7.3f} GB  "
            f"{rate:10,.0f} tokens/s  {rate / chips:8,.0f} per chip")


if __name__ == "__main__":
  app.run(main)
