"""Runs loss, gradients and decoding on one mesh and saves them (for test_sharding).

Everything goes through one `Engine`, with the default sharding rules or
with other ones (`custom`), and the parameters make a round trip through an
Orbax checkpoint: the restored shardings must be the ones the sampler's and
the trainer's jits expect. Sampling runs in the engine's sampling layout and,
for comparison, in the training layout itself.

Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8:
JAX reads the flag once, before it initialises.
"""

import sys

import jax
import numpy as np

from restem_jax.engine import partitioning
from restem_jax.engine.config import ModelConfig
from restem_jax.engine.engine import Engine
from restem_jax.engine.model import Decoder
from restem_jax.engine.sampler import Sampler, SamplingConfig, Stopping
from restem_jax.engine.trainer import OptimizerConfig, weighted_nll
from tests.utils import random_prompts, tiny_params

CONFIG = ModelConfig(vocab_size=128, embed_dim=64, num_layers=2, num_heads=8, num_kv_heads=2,
                     head_dim=16, mlp_dim=128, parallel_block=False)
# Not the defaults: a user's choice of tensor-parallel embeddings and FSDP MLPs.
RULES = {"default": partitioning.DEFAULT_RULES,
         "custom": (("vocab", "fsdp"), ("embed", "tensor"), ("mlp", "fsdp"), ("heads", "fsdp"),
                    ("act_batch", "data"), ("act_mlp", "fsdp"))}


def main(data: int, fsdp: int, tensor: int, rules_name: str, out: str) -> None:
  devices = jax.devices()[:data * fsdp * tensor]
  mesh = partitioning.make_mesh(partitioning.MeshConfig(data, fsdp, tensor), devices)
  rules = RULES[rules_name]
  engine = Engine(CONFIG, None, mesh, rules, max_prompt_len=32, sample_batch=8)
  trainer = engine.trainer(OptimizerConfig(name="adamw"))
  engine.save(out + ".ckpt", engine.place(tiny_params(CONFIG)))
  params = engine.restore(out + ".ckpt")
  agree = all(p.sharding == e == t for p, e, t in zip(
      jax.tree.leaves(params), jax.tree.leaves(engine.param_shardings),
      jax.tree.leaves(trainer.param_shardings)))
  # No device memory to fit on a CPU: sampling weights are whole on every device.
  sampling_replicated = all(x.sharding.is_fully_replicated
                            for x in jax.tree.leaves(engine.sampler.place(params)))
  rng = np.random.default_rng(0)
  batch = {"tokens": rng.integers(1, 128, (8, 16)).astype(np.int32),
           "target_mask": np.tile((np.arange(16) >= 6).astype(np.float32), (8, 1)),
           "valid": np.ones((8, 16), bool), "reward": np.ones(8, np.float32)}

  def loss(p, b):
    with partitioning.sharding_context(mesh, rules):
      total, weight = weighted_nll(Decoder(CONFIG), p, b)
    return total / weight

  grads = jax.jit(jax.grad(loss), in_shardings=(trainer.param_shardings, None),
                  out_shardings=trainer.param_shardings)(params, batch)
  sharded = sum(len(x.sharding.device_set) > 1 and not x.sharding.is_fully_replicated
                for x in jax.tree.leaves(grads))
  state, metrics = trainer.step(trainer.init_state(params), batch)
  # Two microbatches of 4 rows (rows 0, 2, 4, 6 and 1, 3, 5, 7): the whole batch's gradient.
  accum_loss, accum_grads = engine.trainer(OptimizerConfig(name="adamw"), 2).gradients(
      params, batch)
  greedy_config = SamplingConfig(temperature=0.0, max_new_tokens=8)
  # Samples of mixed lengths: lanes move between prompts, within each data shard.
  sampled_config = SamplingConfig(num_samples=3, temperature=1.0, top_k=0, max_new_tokens=8)
  stopping = Stopping.of([3, 7, 11])
  greedy = engine.sample(params, random_prompts(8, 128, seed=2), greedy_config)
  sampled = engine.sample(params, random_prompts(12, 128, seed=3), sampled_config, seed=4,
                          stopping=stopping)
  # The same calls in the training layout, where every decode step gathers the weights.
  in_place = Sampler(CONFIG, mesh, rules, max_prompt_len=32, max_batch=8)
  greedy_in_place = in_place.sample(params, random_prompts(8, 128, seed=2), greedy_config)
  sampled_in_place = in_place.sample(params, random_prompts(12, 128, seed=3), sampled_config,
                                     seed=4, stopping=stopping)
  flat = {f"grad_{i}": np.asarray(g) for i, g in enumerate(jax.tree.leaves(grads))}
  flat.update({f"accum_grad_{i}": np.asarray(g)
               for i, g in enumerate(jax.tree.leaves(accum_grads))})
  np.savez(out, loss=trainer.loss(params, batch), step_loss=metrics["loss"],
           accum_loss=accum_loss,
           tokens=greedy.tokens, sampled=sampled.tokens, sampled_lengths=sampled.lengths,
           logprobs=sampled.logprobs, in_place_tokens=greedy_in_place.tokens,
           in_place_sampled=sampled_in_place.tokens, in_place_lengths=sampled_in_place.lengths,
           in_place_logprobs=sampled_in_place.logprobs, sampling_replicated=sampling_replicated,
           sharded_params=sharded, shardings_agree=agree, **flat)


if __name__ == "__main__":
  main(*map(int, sys.argv[1:4]), *sys.argv[4:6])
