"""Decoder-only transformer in Flax, with an explicit two-part KV cache.

Every call sees tokens shaped [batch, samples, length]. Training and prefill
use samples=1 and attend causally over their own keys. Decoding attends over
two segments: the prompt's keys, computed once per prompt and shared by all
of its samples (`prefix`), and each sample's own generated keys (`cache`).
Sharing the prompt segment is what makes N samples per problem cheap: the
prompt is prefilled once and read once per step, not N times.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from restem_jax.engine import partitioning
from restem_jax.engine.config import ModelConfig

Array = jax.Array


class KV(NamedTuple):
  """Keys and values of one segment, for every layer (leading axis)."""
  k: Array
  v: Array


def _dense_init(fan_in: int):
  return nn.initializers.normal(stddev=fan_in ** -0.5)


def rope_inverse_frequencies(cfg: ModelConfig) -> Array:
  """Inverse frequencies of RoPE, with Llama 3 or linear scaling if configured."""
  inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, cfg.head_dim, 2, dtype=jnp.float32) / cfg.head_dim))
  if cfg.rope_scaling is None:
    return inv
  scaling = dict(cfg.rope_scaling)
  kind = scaling.get("rope_type", "linear")
  factor = scaling["factor"]
  if kind == "linear":
    return inv / factor
  if kind == "llama3":
    # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept,
    # and the band between is interpolated smoothly.
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    smooth = (original / wavelen - low) / (high - low)
    mid = (1 - smooth) * inv / factor + smooth * inv
    out = jnp.where(wavelen > original / low, inv / factor, inv)
    band = (wavelen <= original / low) & (wavelen >= original / high)
    return jnp.where(band, mid, out)
  raise ValueError(f"ModelConfig.rope_scaling type {kind!r} is not supported; use 'linear' or 'llama3'.")


def apply_rope(x: Array, positions: Array, inv_freq: Array) -> Array:
  """Rotates x [..., T, heads, D] by positions [..., T] (rotate-half layout, as in HF)."""
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [..., T, D/2]
  sin = jnp.sin(angles)[..., None, :]
  cos = jnp.cos(angles)[..., None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class RMSNorm(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.cfg
    init = nn.initializers.zeros if cfg.norm_plus_one else nn.initializers.ones
    scale = self.param("scale", nn.with_logical_partitioning(init, ("norm",)),
                       (x.shape[-1],), jnp.dtype(cfg.param_dtype))
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + cfg.norm_eps)
    scale = scale.astype(jnp.float32)
    if cfg.norm_plus_one:
      scale = 1.0 + scale
    return (xf * scale).astype(jnp.dtype(cfg.dtype))


def _param(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str, ...],
           init) -> Array:
  cfg = module.cfg
  value = module.param(name, nn.with_logical_partitioning(init, axes), shape,
                       jnp.dtype(cfg.param_dtype))
  return value.astype(jnp.dtype(cfg.dtype))


def _attend(q: Array, prefix: KV | None, prefix_mask: Array | None, own: KV,
            own_mask: Array) -> Array:
  """Softmax attention of q over the prompt segment and the own segment (one softmax).

  q: [B, N, T, K, G, D]; own.k/v: [B, N, K, S, D]; own_mask: [B, N, T, S];
  prefix: keys [B, K, P, D] visible where prefix_mask [B, P], e.g. a prompt
  head shared by every prompt. Returns [B, N, T, K, G, D].
  """
  scores = [_own_scores(q, own.k, own_mask)]
  if prefix is not None:
    scores.append(_prefix_scores(q, prefix.k, prefix_mask))
  probs = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1).astype(q.dtype)
  s = own.k.shape[3]
  out = jnp.einsum("bnkgts,bnksd->bntkgd", probs[..., :s], own.v)
  if prefix is not None:
    out = out + jnp.einsum("bnkgtp,bkpd->bntkgd", probs[..., s:], prefix.v)
  return out


def _own_scores(q: Array, k: Array, mask: Array) -> Array:
  """q [B, N, T, K, G, D] against own keys [B, N, K, S, D] -> [B, N, K, G, T, S], float32,
  where mask [B, N, T, S] hides a key: the float32 minimum."""
  s = jnp.einsum("bntkgd,bnksd->bnkgts", q, k, preferred_element_type=jnp.float32)
  return jnp.where(mask[:, :, None, None], s, jnp.finfo(jnp.float32).min)


def _prefix_scores(q: Array, k: Array, mask: Array) -> Array:
  """q [B, N, T, K, G, D] against prompt keys [B, K, P, D] -> [B, N, K, G, T, P], float32,
  where mask [B, P] hides a key: the float32 minimum."""
  s = jnp.einsum("bntkgd,bkpd->bnkgtp", q, k, preferred_element_type=jnp.float32)
  return jnp.where(mask[:, None, None, None, None, :], s, jnp.finfo(jnp.float32).min)


def _write(cache: KV, new: KV, index: Array) -> KV:
  """A decode step's keys and values written into the cache in place, at `index` [B, N].

  The cache holds keys [B, N, K, S, D] and values [B, N, K, D, S]: both matmuls
  of attention then contract each operand's minor axis, the layout XLA's CPU
  matmuls take; with values [.., S, D] it transposed the whole value cache
  at every step.
  """
  b, n = index.shape
  rows, lanes = jnp.arange(b)[:, None], jnp.arange(n)[None, :]
  k = cache.k.at[rows, lanes, :, index].set(new.k[:, :, :, 0].astype(cache.k.dtype))
  v = cache.v.at[rows, lanes, :, :, index].set(new.v[:, :, :, 0].astype(cache.v.dtype))
  axes = ("act_batch", "act_samples", "act_kv_heads", None, None)
  return KV(partitioning.constrain(k, axes), partitioning.constrain(v, axes))


def _attend_decoding(q: Array, prefix, prefix_mask: Array | None, own: KV, own_mask: Array
                     ) -> Array:
  """One decode step's attention over the lane's own keys and its prompt's.

  q: [B, N, 1, K, G, D]; own_mask [B, N, 1, S]; own in `_write`'s layout. The
  prompt segment is a `KV` (keys [B, K, P, D], values [B, K, D, P]) visible
  where `prefix_mask`, or an object whose `attend(q)` gives its output
  and log-sum-exp (`partial_attention`'s pair: the sampler reads each slot's
  prompt keys once for all of its lanes); the segments merge as in flash attention.
  """
  out, lse = partial_attention(_own_scores(q, own.k, own_mask), own.v, "bnkgts,bnkds->bntkgd",
                               q.dtype)
  if prefix is None:
    return out.astype(q.dtype)
  if isinstance(prefix, KV):
    pre_out, pre_lse = partial_attention(_prefix_scores(q, prefix.k, prefix_mask), prefix.v,
                                         "bnkgtp,bkdp->bntkgd", q.dtype)
  else:
    pre_out, pre_lse = prefix.attend(q)
  top = jnp.maximum(lse, pre_lse)
  w, pre_w = jnp.exp(lse - top), jnp.exp(pre_lse - top)
  return ((out * w + pre_out * pre_w) / (w + pre_w)).astype(q.dtype)


def partial_attention(scores: Array, v: Array, spec: str, dtype) -> tuple[Array, Array]:
  """Attention over one segment of keys, to be merged with others' (as in flash attention).

  scores: masked float32 [..., K, G, T, S]; `spec` contracts them with v into
  [..., T, K, G, D]. Returns that output, normalised over this segment, in
  float32, and the segment's log-sum-exp [..., T, K, G, 1].
  """
  top = jnp.max(scores, axis=-1, keepdims=True)
  e = jnp.exp(scores - top)
  total = jnp.sum(e, axis=-1, keepdims=True)
  out = jnp.einsum(spec, e.astype(dtype), v, preferred_element_type=jnp.float32)
  to_out = lambda a: jnp.moveaxis(a, -2, -4)  # [..., K, G, T, 1] -> [..., T, K, G, 1]
  return out / to_out(total), to_out(top + jnp.log(total))


class Attention(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array, positions: Array, own_mask: Array, prefix,
               prefix_mask: Array | None, cache: KV | None, cache_index: Array | None
               ) -> tuple[Array, KV]:
    cfg = self.cfg
    e, h, k, d = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    init = _dense_init(e)
    wq = _param(self, "q", (e, h, d), ("embed", "heads", "head_dim"), init)
    wk = _param(self, "k", (e, k, d), ("embed", "kv_heads", "head_dim"), init)
    wv = _param(self, "v", (e, k, d), ("embed", "kv_heads", "head_dim"), init)
    wo = _param(self, "o", (h, d, e), ("heads", "head_dim", "embed"), _dense_init(h * d))
    q = jnp.einsum("bnte,ehd->bnthd", x, wq)
    kk = jnp.einsum("bnte,ekd->bntkd", x, wk)
    vv = jnp.einsum("bnte,ekd->bntkd", x, wv)
    if cfg.qkv_bias:
      zeros = nn.initializers.zeros
      q = q + _param(self, "q_bias", (h, d), ("heads", "head_dim"), zeros)
      kk = kk + _param(self, "k_bias", (k, d), ("kv_heads", "head_dim"), zeros)
      vv = vv + _param(self, "v_bias", (k, d), ("kv_heads", "head_dim"), zeros)
    inv_freq = rope_inverse_frequencies(cfg)
    q = apply_rope(q, positions, inv_freq)
    kk = apply_rope(kk, positions, inv_freq)
    scale = cfg.query_scale if cfg.query_scale is not None else d ** -0.5
    q = (q * scale).reshape(q.shape[:3] + (k, h // k, d))
    q = partitioning.constrain(q, ("act_batch", "act_samples", "act_length", "act_kv_heads", None, None))
    # Heads before length: a prefill's keys copy into a slot without a transpose.
    new = KV(kk.transpose(0, 1, 3, 2, 4), vv.transpose(0, 1, 3, 2, 4))
    if cache is None:
      new = KV(*(partitioning.constrain(a, ("act_batch", "act_samples", "act_kv_heads", None, None))
                 for a in new))
      out = _attend(q, prefix, prefix_mask, KV(new.k.astype(q.dtype), new.v.astype(q.dtype)),
                    own_mask)
    else:
      new = _write(cache, new, cache_index)
      out = _attend_decoding(q, prefix, prefix_mask,
                             KV(new.k.astype(q.dtype), new.v.astype(q.dtype)), own_mask)
    # Heads and head_dim as one contracted axis: XLA then lays the small activation
    # out to match the weight, rather than copying the weight at every decode step.
    out = out.reshape(out.shape[:3] + (h * d,))
    return jnp.einsum("bntf,fe->bnte", out, wo.reshape(h * d, e)), new


class Mlp(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.cfg
    e, m = cfg.embed_dim, cfg.mlp_dim
    gate = _param(self, "gate", (e, m), ("embed", "mlp"), _dense_init(e))
    up = _param(self, "up", (e, m), ("embed", "mlp"), _dense_init(e))
    down = _param(self, "down", (m, e), ("mlp", "embed"), _dense_init(m))
    act = {"silu": jax.nn.silu,
           "gelu": lambda a: jax.nn.gelu(a, approximate=False),
           "gelu_tanh": lambda a: jax.nn.gelu(a, approximate=True)}[cfg.activation]
    hidden = act(x @ gate) * (x @ up)
    hidden = partitioning.constrain(hidden, ("act_batch", "act_samples", "act_length", "act_mlp"))
    return hidden @ down


class Block(nn.Module):
  """One transformer layer; scanned over layers by `Decoder`."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array, layer_kv: tuple[KV | None, KV | None], positions: Array,
               own_mask: Array, prefix_mask: Array | None, cache_index: Array | None
               ) -> tuple[Array, KV]:
    prefix, cache = layer_kv
    attn = Attention(self.cfg, name="attn")
    normed = RMSNorm(self.cfg, name="pre_attn_norm")(x)
    a, kv = attn(normed, positions, own_mask, prefix, prefix_mask, cache, cache_index)
    if self.cfg.parallel_block:
      x = x + a + Mlp(self.cfg, name="mlp")(normed)
    else:
      x = x + a
      x = x + Mlp(self.cfg, name="mlp")(RMSNorm(self.cfg, name="pre_mlp_norm")(x))
    x = partitioning.constrain(x, ("act_batch", "act_samples", "act_length", "act_embed"))
    return x, kv


def _embed(cfg: ModelConfig, embedding: Array, tokens: Array) -> Array:
  x = jnp.take(embedding, tokens, axis=0).astype(jnp.dtype(cfg.dtype))
  if cfg.scale_embeddings:
    x = x * jnp.asarray(cfg.embed_dim ** 0.5, x.dtype)
  return partitioning.constrain(x, ("act_batch", "act_samples", "act_length", "act_embed"))


def _logits(x: Array, head: Array) -> Array:
  logits = jnp.einsum("bnte,ev->bntv", x, head.astype(x.dtype), preferred_element_type=jnp.float32)
  return partitioning.constrain(logits, ("act_batch", "act_samples", "act_length", "act_vocab"))


class Decoder(nn.Module):
  """The decoder. See the module docstring for the segment layout."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens: Array, positions: Array, own_mask: Array,
               last_only: bool = False, prefix: KV | None = None,
               prefix_mask: Array | None = None, at: Array | None = None) -> tuple[Array, KV]:
    """Returns float32 logits [B, N, T, vocab] and the keys/values of `tokens`.

    The KV is [layers, B, N, kv_heads, T, head_dim]. `last_only` computes the
    vocabulary head at the last position only (logits [B, N, 1, vocab]): a
    prefill needs nothing else. `prefix` ([layers, B, kv_heads, P, head_dim],
    visible where `prefix_mask` [B, P]) holds keys already computed, e.g. a
    prompt head shared by every prompt. `at` [B, N, A] computes the head at
    those positions only (logits [B, N, A, vocab]): training needs it where
    the next token is a target. The sampler runs `unrolled`.
    """
    cfg = self.cfg
    embedding = self.param(
        "embedding",
        nn.with_logical_partitioning(_dense_init(cfg.embed_dim), ("vocab", "embed")),
        (cfg.vocab_size, cfg.embed_dim), jnp.dtype(cfg.param_dtype))
    x = _embed(cfg, embedding, tokens)
    # Only a body that runs as a loop (one layer per iteration, several iterations)
    # keeps XLA's CSE from undoing the recomputation; unrolled copies need the guard.
    looped = cfg.scan_unroll == 1 and cfg.num_layers > 1
    block = nn.remat(Block, prevent_cse=not looped) if cfg.remat else Block
    layers = nn.scan(
        block, variable_axes={"params": 0}, split_rngs={"params": True},
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
        length=cfg.num_layers, unroll=cfg.scan_unroll,
        metadata_params={nn.PARTITION_NAME: "layers"})
    x, kv = layers(cfg, name="layers")(x, (prefix, None), positions, own_mask, prefix_mask, None)
    if at is not None:
      x = jnp.take_along_axis(x, at[..., None], axis=2)
    elif last_only:
      x = x[:, :, -1:]
    x = RMSNorm(cfg, name="final_norm")(x)
    if cfg.tie_embeddings:
      head = embedding.T
    else:
      head = self.param(
          "head", nn.with_logical_partitioning(_dense_init(cfg.embed_dim), ("embed", "vocab")),
          (cfg.embed_dim, cfg.vocab_size), jnp.dtype(cfg.param_dtype))
    return _logits(x, head), kv


def per_layer(params) -> dict:
  """The parameters with the scanned layers as one tree per layer (for `unrolled`).

  Inside a decode loop, slicing a layer out of stacked [layers, ...] arrays
  copies it at every step; weights held per layer are read in place.
  """
  stacked = params["layers"]
  count = jax.tree.leaves(stacked)[0].shape[0]
  return dict(params, layers=tuple(jax.tree.map(lambda a, i=i: a[i], stacked)
                                   for i in range(count)))


def unrolled(cfg: ModelConfig, params, tokens: Array, positions: Array, own_mask: Array,
             prefix: Sequence | None = None, prefix_mask: Array | None = None,
             cache: Sequence[KV] | None = None, cache_index: Array | None = None,
             last_only: bool = False) -> tuple[Array, tuple[KV, ...]]:
  """`Decoder` over per-layer weights (`per_layer`), its layers unrolled: logits and each
  layer's keys and values.

  The sampler's prefill and decode step both run this, so a sampling call
  holds one copy of the weights. Each layer's prompt keys (`prefix`, as
  `_attend` takes them) and cache are arrays of their own: a decode step
  updates each layer's cache in place (`cache_index` [B, N] per row), where
  a scan over a stacked cache would copy it twice over.
  """
  layers = params["layers"]
  prefix = (None,) * len(layers) if prefix is None else prefix
  cache = (None,) * len(layers) if cache is None else cache
  x = _embed(cfg, params["embedding"], tokens)
  block = Block(cfg)
  kvs = []
  for layer, layer_prefix, layer_cache in zip(layers, prefix, cache):
    x, kv = block.apply({"params": layer}, x, (layer_prefix, layer_cache), positions, own_mask,
                        prefix_mask, cache_index)
    kvs.append(kv)
  if last_only:
    x = x[:, :, -1:]
  x = RMSNorm(cfg).apply({"params": params["final_norm"]}, x)
  head = params["embedding"].T if cfg.tie_embeddings else params["head"]
  return _logits(x, head), tuple(kvs)


def positions_of(valid: Array) -> Array:
  """Position of every token among the valid ones (padding repeats its neighbour's)."""
  return jnp.maximum(jnp.cumsum(valid, axis=-1) - 1, 0)


def causal_mask(valid: Array) -> Array:
  """[B, N, T] validity -> [B, N, T, T] mask: causal, and padded keys hidden."""
  t = valid.shape[-1]
  causal = jnp.tril(jnp.ones((t, t), bool))
  return causal & valid[..., None, :]


@functools.partial(jax.jit, static_argnums=0)
def forward(model: Decoder, params, tokens: Array, valid: Array | None = None) -> Array:
  """Full forward pass without a cache: logits [B, T, vocab] of tokens [B, T]."""
  if valid is None:
    valid = jnp.ones(tokens.shape, bool)
  logits, _ = model.apply({"params": params}, tokens[:, None], positions_of(valid)[:, None],
                          causal_mask(valid[:, None]))
  return logits[:, 0]

