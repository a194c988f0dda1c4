"""Hugging Face `config.json` <-> `ModelConfig`, per model family.

Supported families (the `model_type` of config.json): llama (Llama 2, 3,
3.1, 3.2, SmolLM, Mistral-style configs without sliding windows), qwen2
(Qwen2 / Qwen2.5, with q/k/v biases) and gemma (Gemma 1: sqrt(d) embedding
scale, `1 + w` RMSNorm, GeGLU). Gemma 2's logit soft-capping, sliding-window
layers and extra norms are not implemented in the decoder: such checkpoints
fail with `UnsupportedModelError` instead of loading into a wrong model.
"""

from __future__ import annotations

import json
import os
from typing import Any

from restem_jax.engine.config import ModelConfig

SUPPORTED_FAMILIES = ("llama", "qwen2", "gemma")


class UnsupportedModelError(ValueError):
  """A checkpoint the decoder cannot express exactly; the message says why."""


def read_config_json(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: a Hugging Face model directory needs config.json next to "
        "its *.safetensors (what `save_pretrained` writes).")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _rope(hf: dict[str, Any]) -> tuple[float, tuple[tuple[str, Any], ...] | None]:
  """rope_theta and scaling from `rope_scaling`/`rope_theta` (transformers 4) or
  `rope_parameters` (transformers 5)."""
  params = dict(hf.get("rope_parameters") or {})
  if params and all(isinstance(v, dict) for v in params.values()):
    raise UnsupportedModelError(
        "config.json has per-layer-type RoPE parameters (rope_parameters keyed by layer "
        "type); restem_jax supports one RoPE for all layers.")
  theta = float(hf.get("rope_theta") or params.get("rope_theta") or 10_000.0)
  scaling = dict(hf.get("rope_scaling") or params)
  scaling.pop("rope_theta", None)
  kind = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
  scaling.pop("type", None)
  if kind == "default":
    return theta, None
  if kind == "linear":
    return theta, (("rope_type", "linear"), ("factor", float(scaling["factor"])))
  if kind == "llama3":
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    return theta, (("rope_type", "llama3"),) + tuple((k, float(scaling[k])) for k in keys)
  raise UnsupportedModelError(
      f"RoPE scaling type {kind!r} is not supported; supported: default, linear, llama3.")


def _check_false(hf: dict[str, Any], *keys: str) -> None:
  for key in keys:
    if hf.get(key):
      raise UnsupportedModelError(
          f"config.json sets {key}={hf[key]!r} for model_type {hf.get('model_type')!r}; "
          "restem_jax's decoder does not implement it.")


def model_config_from_hf(hf: dict[str, Any], param_dtype: str = "float32",
                         dtype: str | None = None) -> ModelConfig:
  """The `ModelConfig` that reproduces this Hugging Face config exactly."""
  family = hf.get("model_type")
  if family == "gemma2" or family == "gemma3" or family == "gemma3_text":
    raise UnsupportedModelError(
        f"model_type {family!r} is not supported: its attention-logit soft-capping, final-logit "
        "soft-capping, alternating sliding-window layers and post-attention/post-MLP norms are "
        "not implemented in restem_jax's decoder. Supported model types: "
        f"{', '.join(SUPPORTED_FAMILIES)} (Gemma 1 is 'gemma').")
  if family not in SUPPORTED_FAMILIES:
    raise UnsupportedModelError(
        f"model_type {family!r} is not supported. Supported model types: "
        f"{', '.join(SUPPORTED_FAMILIES)} (Llama 2/3.x and SmolLM are 'llama', Qwen2/2.5 are "
        "'qwen2', Gemma 1 is 'gemma').")
  heads = hf["num_attention_heads"]
  head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
  theta, scaling = _rope(hf)
  common = dict(
      vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"], num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads, head_dim=head_dim,
      mlp_dim=hf["intermediate_size"], parallel_block=False,
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)), rope_theta=theta, rope_scaling=scaling,
      param_dtype=param_dtype, dtype=dtype or param_dtype)
  if family == "llama":
    _check_false(hf, "attention_bias", "mlp_bias")
    if hf.get("hidden_act", "silu") != "silu":
      raise UnsupportedModelError(f"llama hidden_act={hf['hidden_act']!r}; only 'silu' is supported.")
    return ModelConfig(**common, activation="silu",
                       tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
  if family == "qwen2":
    _check_false(hf, "use_sliding_window")
    return ModelConfig(**common, activation="silu", qkv_bias=True,
                       tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
  act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
  # transformers maps Gemma's legacy "gelu" to the tanh approximation too.
  activation = "gelu" if act == "gelu_exact" else "gelu_tanh"
  return ModelConfig(**common, activation=activation, norm_plus_one=True,
                     scale_embeddings=True, tie_embeddings=bool(hf.get("tie_word_embeddings", True)))


def family_of(cfg: ModelConfig) -> str:
  """The Hugging Face model_type a ModelConfig exports as."""
  if cfg.parallel_block:
    raise UnsupportedModelError(
        "a parallel-block (PaLM-style) decoder has no Hugging Face family to export to.")
  if cfg.norm_plus_one and cfg.scale_embeddings:
    return "gemma"
  if cfg.qkv_bias:
    return "qwen2"
  return "llama"


def hf_config_from_model_config(cfg: ModelConfig) -> dict[str, Any]:
  """A config.json that transformers loads into the same model."""
  family = family_of(cfg)
  out: dict[str, Any] = {
      "model_type": family,
      "architectures": [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                         "gemma": "GemmaForCausalLM"}[family]],
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.embed_dim,
      "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
      "intermediate_size": cfg.mlp_dim, "rms_norm_eps": cfg.norm_eps,
      "rope_theta": cfg.rope_theta, "tie_word_embeddings": cfg.tie_embeddings,
      "torch_dtype": cfg.param_dtype, "max_position_embeddings": 8192,
  }
  if cfg.rope_scaling is not None:
    out["rope_scaling"] = dict(cfg.rope_scaling)
  if family == "gemma":
    out["hidden_act"] = out["hidden_activation"] = (
        "gelu_pytorch_tanh" if cfg.activation == "gelu_tanh" else "gelu_exact")
  else:
    out["hidden_act"] = "silu"
  if family == "llama":
    out.update(attention_bias=False, mlp_bias=False)
  if cfg.query_scale is not None and abs(cfg.query_scale - cfg.head_dim ** -0.5) > 1e-12:
    raise UnsupportedModelError(
        f"query_scale={cfg.query_scale} differs from head_dim**-0.5; {family} has no such field.")
  return out
