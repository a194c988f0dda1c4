"""Mapping between Hugging Face tensor names/layouts and the Decoder's params.

Hugging Face stores a Linear as [out, in] per layer; the Decoder stores
einsum-shaped kernels stacked over layers (`nn.scan`), e.g. q [L, E, H, D].
`params_from_source` builds every parameter with
`jax.make_array_from_callback`, so each device asks only for its own shard
and only the layers/rows inside it are read from the (memory-mapped) source:
a model larger than one host's memory share loads onto a mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import jax
import numpy as np

from restem_jax.engine.config import ModelConfig

_LAYER = "model.layers.{}."


class TensorSource(Protocol):
  """Tensors in Hugging Face names and layouts ([out, in] Linear weights)."""

  def __contains__(self, name: str) -> bool: ...

  def get(self, name: str) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class Recipe:
  hf_name: str  # Contains "{}" for per-layer tensors (stacked on our axis 0).
  to_ours: Callable[[np.ndarray], np.ndarray]  # HF layout -> ours (views, no copy).
  to_hf: Callable[[np.ndarray], np.ndarray]

  @property
  def per_layer(self) -> bool:
    return "{}" in self.hf_name


def _same(x):
  return x


def recipes(cfg: ModelConfig) -> dict[tuple[str, ...], Recipe]:
  """Our param path -> how to build it from (and write it back to) HF tensors."""
  e, h, k, d = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

  def proj_in(heads):  # [heads*D, E] -> [E, heads, D]
    return Recipe("", lambda w: w.reshape(heads, d, e).transpose(2, 0, 1),
                  lambda w: w.transpose(1, 2, 0).reshape(heads * d, e))

  def bias(heads):
    return Recipe("", lambda b: b.reshape(heads, d), lambda b: b.reshape(heads * d))

  transpose = Recipe("", lambda w: w.T, lambda w: w.T)
  table = {
      ("embedding",): ("model.embed_tokens.weight", Recipe("", _same, _same)),
      ("final_norm", "scale"): ("model.norm.weight", Recipe("", _same, _same)),
      ("layers", "pre_attn_norm", "scale"): (_LAYER + "input_layernorm.weight",
                                             Recipe("", _same, _same)),
      ("layers", "attn", "q"): (_LAYER + "self_attn.q_proj.weight", proj_in(h)),
      ("layers", "attn", "k"): (_LAYER + "self_attn.k_proj.weight", proj_in(k)),
      ("layers", "attn", "v"): (_LAYER + "self_attn.v_proj.weight", proj_in(k)),
      ("layers", "attn", "o"): (_LAYER + "self_attn.o_proj.weight", Recipe(
          "", lambda w: w.reshape(e, h, d).transpose(1, 2, 0),
          lambda w: w.transpose(2, 0, 1).reshape(e, h * d))),
      ("layers", "mlp", "gate"): (_LAYER + "mlp.gate_proj.weight", transpose),
      ("layers", "mlp", "up"): (_LAYER + "mlp.up_proj.weight", transpose),
      ("layers", "mlp", "down"): (_LAYER + "mlp.down_proj.weight", transpose),
  }
  if not cfg.parallel_block:
    table[("layers", "pre_mlp_norm", "scale")] = (_LAYER + "post_attention_layernorm.weight",
                                                  Recipe("", _same, _same))
  if not cfg.tie_embeddings:
    table[("head",)] = ("lm_head.weight", transpose)
  if cfg.qkv_bias:
    table[("layers", "attn", "q_bias")] = (_LAYER + "self_attn.q_proj.bias", bias(h))
    table[("layers", "attn", "k_bias")] = (_LAYER + "self_attn.k_proj.bias", bias(k))
    table[("layers", "attn", "v_bias")] = (_LAYER + "self_attn.v_proj.bias", bias(k))
  return {path: dataclasses.replace(r, hf_name=name) for path, (name, r) in table.items()}


def _path_key(path) -> tuple[str, ...]:
  return tuple(getattr(p, "key", getattr(p, "name", p)) for p in path)


def read_slice(source: TensorSource, recipe: Recipe, num_layers: int, index: tuple,
               dtype: np.dtype) -> np.ndarray:
  """The block `index` of our parameter, reading only the layers it covers."""
  if not recipe.per_layer:
    return np.asarray(recipe.to_ours(source.get(recipe.hf_name))[index], dtype=dtype)
  layers = range(num_layers)[index[0]]
  parts = [np.asarray(recipe.to_ours(source.get(recipe.hf_name.format(l)))[index[1:]],
                      dtype=dtype) for l in layers]
  return np.stack(parts)


def check_source(source: TensorSource, cfg: ModelConfig, where: str) -> None:
  """Fails naming the first missing tensor, before any device work starts."""
  for recipe in recipes(cfg).values():
    names = ([recipe.hf_name.format(l) for l in range(cfg.num_layers)] if recipe.per_layer
             else [recipe.hf_name])
    for name in names:
      if name not in source:
        raise KeyError(f"{where} lacks tensor {name!r}, which a {cfg.num_layers}-layer model "
                       "with this config.json needs.")


def params_from_source(source: TensorSource, cfg: ModelConfig, abstract: Any,
                       shardings: Any) -> Any:
  """Builds the params pytree, each leaf placed shard by shard with its sharding."""
  table = recipes(cfg)

  def build(path, leaf, sharding):
    key = _path_key(path)
    if key not in table:
      raise KeyError(f"no Hugging Face tensor maps to parameter {'/'.join(key)}.")
    recipe, dtype = table[key], np.dtype(leaf.dtype)
    return jax.make_array_from_callback(
        leaf.shape, sharding,
        lambda index: read_slice(source, recipe, cfg.num_layers, index, dtype))

  return jax.tree_util.tree_map_with_path(build, abstract, shardings)


def hf_tensors_from_params(params: Any, cfg: ModelConfig, dtype: Any = None
                           ) -> dict[str, np.ndarray]:
  """Our params -> {HF name: array in HF layout}, in a stable order."""
  flat = {_path_key(p): v for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  out: dict[str, np.ndarray] = {}
  for key, recipe in recipes(cfg).items():
    value = np.asarray(jax.device_get(flat[key]))
    if dtype is not None:
      value = value.astype(dtype)
    if recipe.per_layer:
      for l in range(cfg.num_layers):
        out[recipe.hf_name.format(l)] = np.ascontiguousarray(recipe.to_hf(value[l]))
    else:
      out[recipe.hf_name] = np.ascontiguousarray(recipe.to_hf(value))
  return out
