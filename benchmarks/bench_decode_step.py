"""One decode step of the sampler against a plain one-token forward of the same rows.

SmolLM2-135M's shapes (gin_configs/models/smollm2_135m.gin), random weights
(the cost does not depend on their values), the E-step setting of the
SmolLM2 example: `--lanes` lanes over twice as many samples' prompt slots,
4 samples per prompt, 32 new tokens, prompts of `--prompt_len` tokens.

- "step": `decoding.step`, as the decode loop runs it, on a state whose
  slots are all prefilled and whose lanes are all busy;
- "chunk": `decoding.decode` of `--chunk` steps, per step (this tree only);
- "forward": `model.unrolled` on one token per row with no prompt keys and
  no cache: the matmuls, norms and vocabulary head that any decode step runs.

Also counts the compiled step's HLO instructions (entry computation and the
whole module) and, with --dump, writes XLA's optimized HLO there.

    python benchmarks/bench_decode_step.py --lanes=64 --repeats=20
"""

from __future__ import annotations

import json
import os
import re
import time

from absl import app, flags

flags.DEFINE_integer("lanes", 64, "decode lanes.")
flags.DEFINE_integer("samples", 4, "samples per prompt.")
flags.DEFINE_integer("max_new_tokens", 32, "token cap per sample.")
flags.DEFINE_integer("prompt_len", 64, "prompt tokens per slot.")
flags.DEFINE_integer("repeats", 20, "timed steps (after warm-up), median reported.")
flags.DEFINE_integer("chunk", 0, "also time decode chunks of this many steps (0: the "
                     "sampler's default; -1: skip, as for trees without chunks).")
flags.DEFINE_string("model_gin", "gin_configs/models/smollm2_135m.gin", "model shapes.")
flags.DEFINE_string("dtype", "float32", "compute dtype.")
FLAGS = flags.FLAGS


def _median_ms(fn, repeats: int) -> float:
  import jax  # pylint: disable=import-outside-toplevel
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append((time.perf_counter() - start) * 1e3)
  return sorted(times)[len(times) // 2]


def _hlo_counts(compiled) -> dict[str, int]:
  text = compiled.as_text()
  entry = text[text.index("ENTRY"):]
  ops = lambda t: len(re.findall(r"^\s+\S+ = ", t, re.M))
  kinds = {}
  for kind in ("scatter", "gather", "dynamic-update-slice", "dynamic-slice", "dot", "copy",
               "transpose", "fusion"):
    kinds[kind] = len(re.findall(rf"= \S+ {kind}\(", text))
  return dict(module_ops=ops(text), entry_ops=ops(entry), **kinds)


def main(_):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from restem_jax.checkpoint_io import checkpoints  # pylint: disable=import-outside-toplevel
  from restem_jax.engine import decoding, partitioning  # pylint: disable=import-outside-toplevel
  from restem_jax.engine.model import Decoder, causal_mask, unrolled  # pylint: disable=import-outside-toplevel
  from restem_jax.engine.sampler import Sampler, SamplingConfig, Stopping  # pylint: disable=import-outside-toplevel

  cfg = checkpoints.read_model_gin(FLAGS.model_gin, dtype=FLAGS.dtype, param_dtype=FLAGS.dtype)
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  extra = {} if FLAGS.chunk <= 0 else {"decode_chunk": FLAGS.chunk}
  sampler = Sampler(cfg, mesh, max_prompt_len=FLAGS.prompt_len,
                    min_prompt_bucket=FLAGS.prompt_len, max_batch=FLAGS.lanes // FLAGS.samples,
                    lanes=FLAGS.samples, **extra)
  config = SamplingConfig(num_samples=FLAGS.samples, max_new_tokens=FLAGS.max_new_tokens,
                          temperature=0.7, top_k=40)
  tokens = jnp.zeros((1, 1, 8), jnp.int32)
  params = jax.jit(Decoder(cfg).init)(jax.random.PRNGKey(0), tokens, jnp.zeros_like(tokens),
                                      causal_mask(jnp.ones((1, 1, 8), bool)))["params"]
  params = sampler.place(jax.tree.map(lambda x: getattr(x, "value", x), params,
                                      is_leaf=lambda x: hasattr(x, "value")))
  rng = np.random.default_rng(0)
  layout = [list(rng.integers(3, cfg.vocab_size, FLAGS.prompt_len)) for _ in range(
      sampler.slots_for(config, FLAGS.prompt_len))]
  shape = sampler.shape_for(config, Stopping(), layout)
  state = sampler._function("empty", shape)()  # pylint: disable=protected-access
  rows = sampler.refill_for(shape.slots, shape.length)
  for first in range(0, shape.slots, rows):
    into = list(range(first, min(first + rows, shape.slots)))
    keys = np.asarray(jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(0), i))(
        jnp.asarray(into, jnp.uint32)))
    state = sampler._prefill(params, state, shape, [layout[i] for i in into], keys,  # pylint: disable=protected-access
                             into, into, None, rows)
  assert bool(np.asarray(state["active"]).all()), "every lane decodes"
  result = dict(lanes=shape.lanes, slots=shape.slots, prompt_len=shape.length,
                dtype=FLAGS.dtype, jax=jax.__version__, device=jax.devices()[0].device_kind)

  # Donated and threaded, as the decode loop carries it: the caches update in place.
  step = jax.jit(lambda p, s: decoding.step(cfg, shape, p, s), donate_argnums=1)
  compiled = step.lower(params, state).compile()
  result["step_hlo"] = _hlo_counts(compiled)
  holder = [jax.tree.map(jnp.copy, state)]
  def one_step():
    holder[0] = compiled(params, holder[0])
    return holder[0]["token"]
  one_step()
  result["step_ms"] = _median_ms(one_step, FLAGS.repeats)

  m = shape.lanes
  ones = jnp.ones((m, 1, 1), bool)
  forward = jax.jit(lambda p, t: unrolled(cfg, p, t[:, None, None], jnp.zeros((m, 1, 1), jnp.int32),
                                          ones[..., None])[0])
  tok = jnp.asarray(rng.integers(3, cfg.vocab_size, m), jnp.int32)
  forward_compiled = forward.lower(params, tok).compile()
  result["forward_hlo"] = _hlo_counts(forward_compiled)
  result["forward_ms"] = _median_ms(lambda: forward_compiled(params, tok), FLAGS.repeats)
  result["step_over_forward"] = result["step_ms"] / result["forward_ms"]

  if FLAGS.chunk >= 0:
    run = sampler._function("decode", shape)  # pylint: disable=protected-access
    replicated = partitioning.replicated(mesh)
    need, more = (jax.device_put(x, replicated) for x in (np.int32(shape.slots), np.bool_(True)))
    holder = [jax.tree.map(jnp.copy, state)]
    def one_chunk():
      holder[0], free, going = run(params, holder[0], need, more)
      return going
    one_chunk()  # Compile.
    result["chunk"] = sampler.decode_chunk
    result["chunk_step_ms"] = (_median_ms(one_chunk, max(FLAGS.repeats // sampler.decode_chunk, 3))
                               / sampler.decode_chunk)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  app.run(main)
