"""Decoder configuration: one dataclass that can express PaLM, Gemma, Llama and Qwen2."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Mapping


class ConfigError(ValueError):
  """A configuration that cannot work; the message names the field and the fix."""


def check_types(cls: type, values: Mapping[str, Any]) -> None:
  """Fails unless each value matches its dataclass field's annotation (ints for
  ints, no bools for numbers, tuples of the right items), before any use of it."""
  hints = typing.get_type_hints(cls)
  for name, value in values.items():
    if name in hints and not _matches(value, hints[name]):
      raise ConfigError(f"{cls.__name__}.{name}={value!r} must be {_describe(hints[name])}; "
                        f"fix the binding {cls.__name__}.{name}.")


def at_least(config: Any, **minimums: float) -> None:
  """Fails naming the first field below its minimum."""
  for name, minimum in minimums.items():
    value = getattr(config, name)
    if value < minimum:
      raise ConfigError(f"{type(config).__name__}.{name}={value!r} must be >= {minimum}.")


def _matches(value: Any, hint: Any) -> bool:
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if hint is Any:
    return True
  if origin in (typing.Union, types.UnionType):
    return any(_matches(value, arg) for arg in args)
  if hint is type(None):
    return value is None
  if hint is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if origin is tuple:
    if not isinstance(value, (tuple, list)):
      return False
    items = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
    return len(items) == len(value) and all(_matches(v, a) for v, a in zip(value, items))
  if origin is Literal:
    return value in args
  if isinstance(hint, type):
    return isinstance(value, hint)
  return True  # Other annotations (protocols, callables) are left to their users.


def _describe(hint: Any) -> str:
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    return " or ".join(_describe(a) for a in args)
  if hint is type(None):
    return "None"
  if origin is tuple:
    inner = _describe(args[0]) + ", ..." if len(args) == 2 and args[1] is Ellipsis else \
        ", ".join(_describe(a) for a in args)
    return f"a tuple ({inner})"
  if origin is Literal:
    return "one of " + ", ".join(map(repr, args))
  return {int: "an int", float: "a number", bool: "True or False", str: "a string"}.get(
      hint, getattr(hint, "__name__", str(hint)))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a decoder-only transformer.

  The defaults are PaLM's choices (parallel block, multi-query attention,
  SwiGLU, RoPE, tied embeddings, no biases); every one is a switch so that the
  open families the converter loads are expressed exactly.
  """

  vocab_size: int = 256
  embed_dim: int = 128
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 1  # 1 = multi-query (PaLM); num_heads = multi-head.
  head_dim: int = 32
  mlp_dim: int = 512
  # PaLM computes attention and MLP from the same normalised input and sums
  # them; Llama, Gemma and Qwen2 apply them one after the other.
  parallel_block: bool = True
  activation: Literal["silu", "gelu", "gelu_tanh"] = "silu"  # silu=SwiGLU, gelu*=GeGLU
  tie_embeddings: bool = True
  norm_eps: float = 1e-6
  # Gemma stores RMSNorm scales as w and multiplies by (1 + w).
  norm_plus_one: bool = False
  qkv_bias: bool = False  # Qwen2
  # Gemma multiplies embeddings by sqrt(embed_dim) before the first block.
  scale_embeddings: bool = False
  rope_theta: float = 10_000.0
  # Llama 3 style frequency scaling; None leaves RoPE unscaled.
  rope_scaling: tuple[tuple[str, float | str], ...] | None = None
  # Attention logits are scaled by query_scale; None means head_dim ** -0.5.
  query_scale: float | None = None
  # Computation dtype; parameters stay in param_dtype (fp32 master weights).
  dtype: str = "float32"
  param_dtype: str = "float32"
  # Execution, not architecture (converted checkpoints do not record them).
  # remat recomputes each layer's activations in the backward pass, for about
  # a third more layer FLOPs. On by default, as measured on SmolLM2-135M
  # (AdamW, CPU; benchmarks/README.md, "Memory"): train-step temporaries
  # 2.4 -> 1.2 GB at 8 x 96 tokens for +2% step time, and 14.5 -> 4.5 GB at
  # 8 x 512 with a 10% faster step. scan_unroll is lax.scan's unroll over
  # layers (num_layers unrolls the stack: longer compiles, sometimes faster
  # steps; the plan uses it to count every layer's FLOPs).
  remat: bool = True
  scan_unroll: int = 1

  def __post_init__(self):
    for name in ("vocab_size", "embed_dim", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim", "mlp_dim"):
      if getattr(self, name) < 1:
        raise ConfigError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}.")
    if self.num_heads % self.num_kv_heads:
      raise ConfigError(
          f"ModelConfig.num_heads={self.num_heads} is not divisible by "
          f"ModelConfig.num_kv_heads={self.num_kv_heads}: every key/value head "
          "must serve the same number of query heads. Pick num_kv_heads among "
          f"the divisors of num_heads: {_divisors(self.num_heads)}.")
    if self.head_dim % 2:
      raise ConfigError(
          f"ModelConfig.head_dim={self.head_dim} must be even for rotary "
          "embeddings (RoPE rotates pairs of dimensions).")
    if self.activation not in ("silu", "gelu", "gelu_tanh"):
      raise ConfigError(
          f"ModelConfig.activation={self.activation!r} is unknown; use 'silu' "
          "(SwiGLU), 'gelu' or 'gelu_tanh' (GeGLU).")
    if not 1 <= self.scan_unroll <= self.num_layers:
      raise ConfigError(f"ModelConfig.scan_unroll={self.scan_unroll} must be between 1 and "
                        f"num_layers={self.num_layers}.")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise ConfigError(
            f"ModelConfig.{name}={getattr(self, name)!r} is unknown; use "
            "'float32', 'bfloat16' or 'float16'.")

  @property
  def num_params(self) -> int:
    """Parameter count, used by benchmarks for FLOP estimates."""
    attn = self.embed_dim * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
    if self.qkv_bias:
      attn += self.head_dim * (self.num_heads + 2 * self.num_kv_heads)
    mlp = 3 * self.embed_dim * self.mlp_dim
    norms = (1 if self.parallel_block else 2) * self.embed_dim
    embed = self.vocab_size * self.embed_dim * (1 if self.tie_embeddings else 2)
    return self.num_layers * (attn + mlp + norms) + embed + self.embed_dim


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]
