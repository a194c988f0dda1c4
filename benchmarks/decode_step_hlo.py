"""What one compiled decode step contains, per layer: ops by kind, and XLA's byte count.

Compiles `decoding.step` for a model with 1 and 2 layers (the difference is
one layer; everything else is the step's own overhead) on the CPU or for a
TPU topology (libtpu, no TPU needed), at the E-step setting of the paper
runs (32 samples, 512 new tokens, 1,536-token prompts) or SmolLM2's CPU
example (4 samples, 32 new tokens, 64-token prompts), and prints the
per-layer op counts, XLA's FLOPs and bytes accessed, and the layer's
largest operations by bytes read and written.

    python benchmarks/decode_step_hlo.py --model_gin=gin_configs/models/llama_3_2_1b.gin \
        --topology=v5e:2x4 --sample_batch=32
    python benchmarks/decode_step_hlo.py --topology=cpu --setting=smollm2

For a revision's numbers, run the same command with PYTHONPATH set to a
checkout of it (`git worktree add /tmp/old REV`).
"""

from __future__ import annotations

import collections
import dataclasses
import re

from absl import app, flags

flags.DEFINE_string("model_gin", "gin_configs/models/smollm2_135m.gin", "the model's gin file.")
flags.DEFINE_string("topology", "cpu", "'cpu' or a TPU topology such as v5e:2x4.")
flags.DEFINE_integer("sample_batch", 16, "RestemConfig.sample_batch (per data-parallel group).")
flags.DEFINE_enum("setting", "paper", ["paper", "smollm2"], "sampling setting (see above).")
flags.DEFINE_integer("top", 12, "largest operations of one layer to list.")
FLAGS = flags.FLAGS

_BYTES = {"bf16": 2, "f16": 2, "f32": 4, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1}
_SKIP = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant"}


def _nbytes(shape: str) -> int:
  total = 0
  for dtype, dims in re.findall(r"(bf16|f16|f32|s32|u32|pred|s8|u8)\[([\d,]*)\]", shape):
    count = 1
    for d in filter(None, dims.split(",")):
      count *= int(d)
    total += count * _BYTES[dtype]
  return total


def _ops(text: str) -> list[tuple[str, int, str]]:
  """(kind, bytes read and written, name) of every instruction the entry computation runs."""
  shapes = dict(re.findall(r"^\s*(?:ROOT )?%(\S+) = (\([^=]*?\)|\S+) ", text, re.M))
  entry = text[text.index("\nENTRY"):]
  entry = entry[:entry.index("\n}")]
  out = []
  for line in entry.splitlines()[1:]:
    m = re.match(r"\s*(?:ROOT )?%(\S+) = (\([^=]*?\)|\S+) (\S+?)\((.*)", line)
    if not m or m.group(3) in _SKIP:
      continue
    name, shape, kind, rest = m.groups()
    operands = re.findall(r"%([\w.\-]+)", rest.split("),")[0])
    meta = re.search(r'op_name="([^"]*)"', line)
    out.append((kind, _nbytes(shape) + sum(_nbytes(shapes.get(o, "")) for o in operands),
                meta.group(1)[-60:] if meta else name))
  return out


def main(_):
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.sharding import Mesh  # pylint: disable=import-outside-toplevel
  from restem_jax.checkpoint_io import checkpoints  # pylint: disable=import-outside-toplevel
  from restem_jax.engine import planning  # pylint: disable=import-outside-toplevel
  from restem_jax.engine.partitioning import MESH_AXES  # pylint: disable=import-outside-toplevel
  from restem_jax.engine.sampler import Sampler, SamplingConfig, Stopping  # pylint: disable=import-outside-toplevel

  with open(FLAGS.model_gin, encoding="utf-8") as f:
    lines = [l for l in f if l.startswith("ModelConfig.")]
  path = "/tmp/decode_step_hlo_model.gin"
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(lines)
  cpu = FLAGS.topology == "cpu"
  model = checkpoints.read_model_gin(path, **({} if cpu else {"dtype": "bfloat16"}))
  devices = np.asarray(jax.devices()[:1] if cpu else planning.tpu_slice(FLAGS.topology).devices)
  mesh = Mesh(devices.reshape(-1, 1, 1), MESH_AXES)
  if FLAGS.setting == "paper":
    sampling, prompt_len = SamplingConfig(num_samples=32, max_new_tokens=512, temperature=0.7,
                                          top_k=40), 1536
  else:
    sampling, prompt_len = SamplingConfig(num_samples=4, max_new_tokens=32, temperature=0.7,
                                          top_k=40), 64
  programs = {}
  for layers in (1, 2):
    probe = dataclasses.replace(model, num_layers=layers, scan_unroll=layers)
    sampler = Sampler(probe, mesh, max_prompt_len=prompt_len, min_prompt_bucket=prompt_len,
                      max_batch=FLAGS.sample_batch * len(devices))
    programs[layers] = sampler.compile_ahead(sampling, Stopping((0,)), parts=True)["decode_step"]
  ops = {n: _ops(c.as_text()) for n, c in programs.items()}
  costs = {n: planning._costs(c) for n, c in programs.items()}  # pylint: disable=protected-access
  kinds = {n: collections.Counter(k for k, _, _ in o) for n, o in ops.items()}
  layer = {k: kinds[2][k] - kinds[1][k] for k in kinds[2] if kinds[2][k] != kinds[1][k]}
  print(f"{FLAGS.model_gin} on {FLAGS.topology}, sample_batch {FLAGS.sample_batch} "
        f"({sampler.rows} lanes), setting {FLAGS.setting}; jax {jax.__version__}")
  print(f"ops per layer: {sum(layer.values())} ({', '.join(f'{k} {v}' for k, v in sorted(layer.items(), key=lambda kv: -kv[1]))})")
  print(f"ops outside the layers: {sum(kinds[1].values()) - sum(layer.values())}")
  flops, nbytes = (costs[2][i] - costs[1][i] for i in (0, 1))
  rest = costs[1][1] - nbytes
  print(f"XLA per layer: {flops / 1e9:.2f} GFLOP, {nbytes / 1e9:.3f} GB accessed; outside the "
        f"layers {rest / 1e9:.3f} GB; whole step ({model.num_layers} layers) "
        f"{(rest + model.num_layers * nbytes) / 1e9:.2f} GB per device")
  # The second layer's own operations: those of the 2-layer probe not matched in the 1-layer one.
  left = collections.Counter((k, b) for k, b, _ in ops[1])
  extra = []
  for kind, nbytes_, name in ops[2]:
    if left[(kind, nbytes_)]:
      left[(kind, nbytes_)] -= 1
    else:
      extra.append((nbytes_, kind, name))
  print(f"largest operations of one layer (bytes read + written, as the HLO's shapes say):")
  for nbytes_, kind, name in sorted(extra, reverse=True)[:FLAGS.top]:
    print(f"  {nbytes_ / 1e6:9.1f} MB  {kind:16s} {name}")


if __name__ == "__main__":
  app.run(main)
