"""The decoder: every architecture switch runs, and cached decoding equals a full forward."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from restem_jax.engine import params as P
from restem_jax.engine import partitioning
from restem_jax.engine.config import ConfigError, ModelConfig
from restem_jax.engine.model import KV, Decoder, causal_mask, forward, per_layer, unrolled
from tests.utils import TINY, tiny_params

VARIANTS = {
    "palm": TINY,
    "llama_gqa": TINY.__class__(**{**TINY.__dict__, "parallel_block": False, "num_kv_heads": 2,
                                   "tie_embeddings": False}),
    "qwen2": TINY.__class__(**{**TINY.__dict__, "parallel_block": False, "num_kv_heads": 4,
                               "qkv_bias": True, "rope_theta": 1e6}),
    "gemma": TINY.__class__(**{**TINY.__dict__, "parallel_block": False, "activation": "gelu_tanh",
                               "norm_plus_one": True, "scale_embeddings": True}),
}


class ModelTest(parameterized.TestCase):

  @parameterized.named_parameters(*VARIANTS.items())
  def test_param_count_matches_config(self, cfg):
    self.assertEqual(P.count(tiny_params(cfg)), cfg.num_params)

  @parameterized.named_parameters(*VARIANTS.items())
  def test_incremental_decoding_equals_full_forward(self, cfg):
    """Prefill a prefix, then feed tokens one at a time through the two-part cache."""
    model, params = Decoder(cfg), tiny_params(cfg)
    tokens = jnp.asarray(np.random.default_rng(1).integers(1, cfg.vocab_size, (2, 10)))
    full = forward(model, params, tokens)
    p, g = 6, 4
    valid = jnp.ones((2, p), bool)
    positions = jnp.broadcast_to(jnp.arange(p), (2, p))
    apply = jax.jit(model.apply)
    logits, prefix = apply({"params": params}, tokens[:, None, :p], positions[:, None],
                                 causal_mask(valid[:, None]))
    np.testing.assert_allclose(logits[:, 0], full[:, :p], atol=1e-4)
    layers = per_layer(params)
    # Decoding holds values with head_dim before length (model._write).
    prefix = tuple(KV(prefix.k[i, :, 0], jnp.swapaxes(prefix.v[i, :, 0], -1, -2))
                   for i in range(cfg.num_layers))
    shape = (2, 1, cfg.num_kv_heads, g, cfg.head_dim)
    cache = tuple(KV(jnp.zeros(shape), jnp.zeros(shape[:3] + shape[:2:-1]))
                  for _ in range(cfg.num_layers))
    step_fn = jax.jit(lambda *a: unrolled(cfg, layers, *a))
    for t in range(g):
      index = jnp.full((2, 1), t)
      step, cache = step_fn(tokens[:, None, p + t:p + t + 1], jnp.full((2, 1, 1), p + t),
                            jnp.broadcast_to(jnp.arange(g) <= t, (2, 1, 1, g)), prefix, valid,
                            cache, index)
      np.testing.assert_allclose(step[:, 0, 0], full[:, p + t], atol=1e-4)

  @parameterized.named_parameters(*VARIANTS.items())
  def test_unrolled_layers_equal_the_scanned_decoder(self, cfg):
    """The sampler's forward over per-layer weights: same logits and keys as `Decoder`."""
    model, params = Decoder(cfg), tiny_params(cfg)
    tokens = jnp.asarray(np.random.default_rng(2).integers(1, cfg.vocab_size, (2, 1, 7)))
    valid = jnp.ones((2, 1, 7), bool)
    positions = jnp.broadcast_to(jnp.arange(7), (2, 1, 7))
    logits, kv = model.apply({"params": params}, tokens, positions, causal_mask(valid))
    ours, ours_kv = jax.jit(lambda *a: unrolled(cfg, per_layer(params), *a))(
        tokens, positions, causal_mask(valid))
    np.testing.assert_allclose(ours, logits, atol=1e-5)
    for i, layer in enumerate(ours_kv):
      np.testing.assert_allclose(layer.k, kv.k[i], atol=1e-5)
      np.testing.assert_allclose(layer.v, kv.v[i], atol=1e-5)
    last, _ = unrolled(cfg, per_layer(params), tokens, positions, causal_mask(valid),
                       last_only=True)
    np.testing.assert_allclose(last, logits[:, :, -1:], atol=1e-5)

  def test_left_padding_does_not_change_logits(self):
    model, params = Decoder(TINY), tiny_params()
    tokens = jnp.asarray([[5, 9, 17, 33]])
    padded = jnp.asarray([[0, 0, 5, 9, 17, 33]])
    valid = jnp.asarray([[False, False, True, True, True, True]])
    np.testing.assert_allclose(forward(model, params, padded, valid)[:, 2:],
                               forward(model, params, tokens), atol=1e-5)

  def test_bf16_compute_keeps_fp32_params(self):
    cfg = TINY.__class__(**{**TINY.__dict__, "dtype": "bfloat16"})
    params = tiny_params(cfg)
    self.assertTrue(all(x.dtype == jnp.float32 for x in jax.tree.leaves(params)))
    logits = forward(Decoder(cfg), params, jnp.asarray([[1, 2, 3]]))
    self.assertEqual(logits.dtype, jnp.float32)
    ref = forward(Decoder(TINY), params, jnp.asarray([[1, 2, 3]]))
    np.testing.assert_allclose(logits, ref, atol=0.1)

  def test_params_carry_logical_axis_names(self):
    boxed = jax.eval_shape(lambda r: P._boxed_init(Decoder(TINY), r), jax.random.PRNGKey(0))
    names = partitioning.param_names(boxed)
    self.assertEqual(tuple(names["layers"]["attn"]["q"]), ("layers", "embed", "heads", "head_dim"))
    self.assertEqual(tuple(names["embedding"]), ("vocab", "embed"))


class ConfigErrorTest(absltest.TestCase):

  def test_heads_not_divisible_by_kv_heads(self):
    with self.assertRaisesRegex(ConfigError, r"num_heads=6.*num_kv_heads=4.*\[1, 2, 3, 6\]"):
      ModelConfig(num_heads=6, num_kv_heads=4)

  def test_odd_head_dim(self):
    with self.assertRaisesRegex(ConfigError, "head_dim=15"):
      ModelConfig(head_dim=15)

  def test_unknown_activation_and_dtype(self):
    with self.assertRaisesRegex(ConfigError, "activation='relu'"):
      ModelConfig(activation="relu")
    with self.assertRaisesRegex(ConfigError, "dtype='float64'"):
      ModelConfig(dtype="float64")


if __name__ == "__main__":
  absltest.main()
