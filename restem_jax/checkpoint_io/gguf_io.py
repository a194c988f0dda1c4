"""GGUF files (llama.cpp) as a tensor source in Hugging Face names and layouts.

Tensors are dequantised to float32 with the `gguf` package when first read
(one at a time, a few cached). llama.cpp's converter permutes the rows of
Llama's q/k projections for its interleaved RoPE and adds 1 to Gemma's norm
weights; both are undone here so the result equals the original checkpoint
(up to quantisation error).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from restem_jax.checkpoint_io.hf_config import UnsupportedModelError

_ARCHS = ("llama", "qwen2", "gemma")
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight",
                 "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}


@functools.lru_cache(maxsize=2)
def _reader(path: str, mtime: float):
  """GGUFReader parses every metadata string in Python (seconds); opened once."""
  del mtime  # Part of the cache key only.
  import gguf  # pylint: disable=import-outside-toplevel
  return gguf.GGUFReader(path)


class GGUFError(ValueError):
  """A GGUF file that cannot be converted; the message says why."""


def _hf_name(name: str) -> str | None:
  if name in _GLOBAL_NAMES:
    return _GLOBAL_NAMES[name]
  if name.startswith("blk."):
    _, layer, rest = name.split(".", 2)
    if rest in _LAYER_NAMES:
      return f"model.layers.{layer}.{_LAYER_NAMES[rest]}"
  return None


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
  """Inverse of llama.cpp's `permute` (interleaved -> rotate-half RoPE rows)."""
  half = w.shape[0] // heads // 2
  return w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFSource:
  """Reads a GGUF file: its config (as HF config.json keys), tensors, vocabulary."""

  def __init__(self, path: str):
    try:
      import gguf  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError("reading GGUF needs the `gguf` package: pip install gguf "
                        "(or restem_jax[convert]).") from e
    self._gguf = gguf
    self.path = path
    self.reader = _reader(path, os.path.getmtime(path))
    self.fields = self.reader.fields
    self.arch = self.field("general.architecture")
    if self.arch not in _ARCHS:
      raise UnsupportedModelError(
          f"{path}: GGUF architecture {self.arch!r} is not supported; supported: "
          f"{', '.join(_ARCHS)}." + (" Gemma 2's soft-capping and sliding-window layers are "
                                     "not implemented." if self.arch == "gemma2" else ""))
    self.tensors = {}
    for t in self.reader.tensors:
      hf = _hf_name(t.name)
      if hf is not None:
        self.tensors[hf] = t
      elif t.name == "rope_freqs.weight":
        raise UnsupportedModelError(
            f"{path} stores RoPE frequency factors (rope_freqs, Llama 3.1+ scaling); "
            "convert the Hugging Face directory instead, whose config.json has rope_scaling.")
    self.hf_config = self._hf_config()

  def field(self, key: str, default: Any = None) -> Any:
    f = self.fields.get(key)
    if f is None:
      return default
    return f.contents()

  def _hf_config(self) -> dict[str, Any]:
    a = self.arch
    heads = int(self.field(f"{a}.attention.head_count"))
    embed = int(self.field(f"{a}.embedding_length"))
    tokens = self.fields.get("tokenizer.ggml.tokens")
    vocab = int(self.field(f"{a}.vocab_size") or (len(tokens.data) if tokens else 0) or
                self.tensors["model.embed_tokens.weight"].shape[-1])
    eps = float(str(np.float32(self.field(f"{a}.attention.layer_norm_rms_epsilon"))))
    cfg: dict[str, Any] = {
        "model_type": a, "vocab_size": vocab, "hidden_size": embed,
        "num_hidden_layers": int(self.field(f"{a}.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(self.field(f"{a}.attention.head_count_kv", heads)),
        "head_dim": int(self.field(f"{a}.attention.key_length", embed // heads)),
        "intermediate_size": int(self.field(f"{a}.feed_forward_length")),
        "rms_norm_eps": eps,
        "rope_theta": float(self.field(f"{a}.rope.freq_base", 10_000.0)),
        "tie_word_embeddings": "lm_head.weight" not in self.tensors,
        "max_position_embeddings": int(self.field(f"{a}.context_length", 8192)),
    }
    kind = self.field(f"{a}.rope.scaling.type")
    if kind not in (None, "none"):
      if kind != "linear":
        raise UnsupportedModelError(f"{self.path}: GGUF RoPE scaling {kind!r} is not supported.")
      cfg["rope_scaling"] = {"rope_type": "linear",
                             "factor": float(self.field(f"{a}.rope.scaling.factor"))}
    if a == "qwen2":
      cfg["use_sliding_window"] = False
    return cfg

  def __contains__(self, name: str) -> bool:
    return name in self.tensors

  def keys(self):
    return self.tensors.keys()

  @functools.lru_cache(maxsize=8)
  def get(self, name: str) -> np.ndarray:
    """The dequantised float32 tensor in Hugging Face layout."""
    if name not in self.tensors:
      raise KeyError(f"tensor {name!r} is not in {self.path}.")
    t = self.tensors[name]
    try:
      w = np.asarray(self._gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
    except NotImplementedError as e:
      raise GGUFError(
          f"{self.path}: tensor {t.name} uses quantisation {t.tensor_type.name}, which the "
          f"installed gguf package cannot dequantise ({e}). Re-quantise the file to F32, F16, "
          "BF16, Q8_0 or a K-quant, or upgrade gguf.") from e
    w = w.reshape(tuple(int(n) for n in reversed(t.shape)))
    if self.arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
      heads = self.hf_config["num_attention_heads" if "q_proj" in name else "num_key_value_heads"]
      w = _unpermute(w, heads)
    if self.arch == "gemma" and name.endswith("norm.weight"):
      w = w - 1.0
    return w
