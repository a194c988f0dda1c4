"""Tunix 0.1.7's Llama-3 and sampler, adapted to run on our SmolLM2 weights (for bench_tunix.py).

Adaptations needed to run Tunix on SmolLM2 (all inside this process; the
installed package is not modified):

  * Import: `tunix/__init__.py` imports trainers whose dependencies are not
    installed, so a bare `tunix` package module is put into `sys.modules`
    and only `tunix.generate.sampler` and `tunix.models.llama3.model` are
    imported. If `jaxtyping` (used by Tunix for annotations only) is
    missing, a stub providing `Array`/`ArrayLike` stands in.
  * RoPE: Tunix 0.1.7's Llama-3 attention calls `apply_rope` without the
    configured `rope_theta`, so it always uses its default theta 1e6;
    SmolLM2 needs 1e5. `tunix.models.llama3.model.apply_rope` is
    monkeypatched to pass the config's theta (the printed parity shows the
    difference without the patch).
  * Config: Tunix's `ModelConfig` supports what SmolLM2 needs: tied
    embeddings (`weight_tying=True`), grouped-query attention with 9 query
    and 3 kv heads (query head i uses kv head i // 3, as in HF and ours),
    RMSNorm eps (`norm_eps=1e-5`), SiLU-gated MLP. Weights map one to one:
    q/k/v [E, heads, D], o [H, D, E], MLP kernels [in, out], norm scales and
    the [V, E] embedding.
  * Tokenizer: Tunix's sampler takes strings and a tokenizer. It gets the
    prompts' text and an adapter over our vocabulary whose `encode` returns
    the ids we computed for that text (so both get identical ids, and
    tokenization is outside both timings; the ids Tunix actually fed are
    checked against ours), no BOS (SmolLM2 has none; ours adds none),
    EOS <|im_end|> (2), pad <|endoftext|> (0, absent from every prompt), and
    a `decode` that returns "" (Tunix detokenizes every row inside its call;
    ours returns ids, so text decoding is left out of both).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import inspect
import sys
import types

def import_tunix():
  """(tunix.generate.sampler, tunix.models.llama3.model), without tunix/__init__.py."""
  if "tunix" not in sys.modules:
    spec = importlib.util.find_spec("tunix")
    if spec is None:
      raise SystemExit("Tunix is not installed: pip install --no-deps google-tunix==0.1.7")
    package = types.ModuleType("tunix")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["tunix"] = package
  try:
    import jaxtyping  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:  # Tunix uses it for annotations only.
    import jax  # pylint: disable=import-outside-toplevel
    stub = types.ModuleType("jaxtyping")
    stub.Array, stub.ArrayLike = jax.Array, jax.typing.ArrayLike
    sys.modules["jaxtyping"] = stub
  import tunix.generate.sampler as tunix_sampler  # pylint: disable=import-outside-toplevel
  import tunix.models.llama3.model as tunix_llama3  # pylint: disable=import-outside-toplevel
  return tunix_sampler, tunix_llama3


def tunix_version() -> str:
  try:
    return importlib.metadata.version("google-tunix")
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


def patch_rope(tunix_llama3, theta: float) -> float:
  """Makes Tunix's Llama-3 attention use `theta`; returns the theta it used before."""
  original = getattr(tunix_llama3.apply_rope, "__wrapped__", tunix_llama3.apply_rope)
  default = inspect.signature(original).parameters["rope_theta"].default

  @functools.wraps(original)
  def apply_rope(inputs, positions, head_dim, rope_theta=None):
    del rope_theta  # 0.1.7's Attention never passes it.
    return original(inputs, positions, head_dim, rope_theta=theta)

  tunix_llama3.apply_rope = apply_rope
  return default


def tunix_config(tunix_llama3, cfg):
  """Tunix's Llama-3 config for our ModelConfig (failing on what it cannot express)."""
  unsupported = {
      "parallel_block": cfg.parallel_block, "qkv_bias": cfg.qkv_bias,
      "norm_plus_one": cfg.norm_plus_one, "scale_embeddings": cfg.scale_embeddings,
      "rope_scaling": cfg.rope_scaling is not None, "query_scale": cfg.query_scale is not None,
      "activation != silu": cfg.activation != "silu", "remat": False}
  bad = [name for name, on in unsupported.items() if on]
  if bad:
    raise SystemExit(f"Tunix's Llama-3 module cannot express this model: {bad}.")
  return tunix_llama3.ModelConfig(
      num_layers=cfg.num_layers, vocab_size=cfg.vocab_size, embed_dim=cfg.embed_dim,
      hidden_dim=cfg.mlp_dim, num_heads=cfg.num_heads, head_dim=cfg.head_dim,
      num_kv_heads=cfg.num_kv_heads, rope_theta=int(cfg.rope_theta), norm_eps=cfg.norm_eps,
      weight_tying=cfg.tie_embeddings,
      shd_config=tunix_llama3.ShardingConfig.get_default_sharding(is_sampling=True))


def tunix_model(tunix_llama3, cfg, params):
  """Tunix's Llama3 nnx module holding our parameters (built abstract, then filled)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  model = nnx.eval_shape(lambda: tunix_llama3.Llama3(tunix_config(tunix_llama3, cfg),
                                                     rngs=nnx.Rngs(0)))

  def put(variable, value, name):
    value = jnp.asarray(value, jnp.dtype(cfg.param_dtype))
    shape = tuple(variable.get_value().shape)
    if shape != tuple(value.shape):
      raise SystemExit(f"Tunix {name}: shape {shape}, ours {value.shape}.")
    variable.set_value(value)

  put(model.embedder.input_embedding, params["embedding"], "embedding")
  put(model.final_norm.w, params["final_norm"]["scale"], "final_norm")
  if not cfg.tie_embeddings:
    put(model.lm_head.w, params["head"], "lm_head")
  ours = params["layers"]
  for i, layer in enumerate(model.layers):
    put(layer.input_layernorm.w, ours["pre_attn_norm"]["scale"][i], f"layer {i} input norm")
    put(layer.post_attention_layernorm.w, ours["pre_mlp_norm"]["scale"][i], f"layer {i} mlp norm")
    for theirs, mine in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("o_proj", "o")):
      put(getattr(layer.attn, theirs).w, ours["attn"][mine][i], f"layer {i} {theirs}")
    for name in ("gate", "up", "down"):
      put(getattr(layer.mlp, f"{name}_proj").kernel, ours["mlp"][name][i], f"layer {i} {name}")
  left = [a for a in jax.tree.leaves(nnx.state(model)) if not isinstance(a, jax.Array)]
  if left:
    raise SystemExit(f"{len(left)} Tunix parameters were not filled from ours.")
  return model


class IdsTokenizer:
  """Tunix's tokenizer interface (encode/decode/bos_id/eos_id/pad_id) over precomputed ids."""

  def __init__(self, ids_by_text: dict, eos_id: int, pad_id: int):
    self.ids_by_text, self._eos, self._pad = ids_by_text, eos_id, pad_id

  def encode(self, text, **_):
    return list(self.ids_by_text[text])

  def decode(self, ids, **_):
    del ids  # Text decoding is left out of both timings.
    return ""

  def bos_id(self):
    return None  # The ids are complete: BOS is there iff the model wants it (SmolLM2: never).

  def eos_id(self):
    return self._eos

  def pad_id(self):
    return self._pad


def logits_diff(model, tunix_module, ids) -> tuple[float, float]:
  """(max |ours - Tunix|, max |ours|) over the logits of one unpadded prompt.

  In full float32 matmul precision: a GPU's default (TF32) rounds each
  product differently in the two models and hides a real mismatch.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  tokens = np.asarray(ids, np.int32)[None]
  t = tokens.shape[1]
  with jax.default_matmul_precision("highest"):
    ours = model.logits(tokens)
    theirs, _ = tunix_module(jnp.asarray(tokens), jnp.arange(t, dtype=jnp.int32)[None], None,
                             jnp.tril(jnp.ones((t, t), bool))[None])
  return float(np.max(np.abs(ours - np.asarray(theirs, np.float32)))), float(np.max(np.abs(ours)))
