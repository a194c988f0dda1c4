"""`load_model(path)`: a converted checkpoint, a Hugging Face directory or a GGUF file.

    model = restem_jax.load_model("/ckpt/smollm2")          # or HF dir / x.gguf
    logits = model.logits([[1, 2, 3]])                      # float32 [1, 3, vocab]
    print(model.generate(["The capital of France is"], max_new_tokens=16))
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from restem_jax import params as P
from restem_jax import partitioning
from restem_jax.checkpoint_io import hf_config as hfc
from restem_jax.checkpoint_io import orbax_io, weights
from restem_jax.config import ModelConfig
from restem_jax.model import Decoder, forward


@dataclasses.dataclass
class Opened:
  """A checkpoint's config and lazily-read tensors, before placement."""
  kind: str  # "converted", "huggingface" or "gguf"
  config: ModelConfig
  hf_config: dict
  source: Any  # weights.TensorSource (None for converted checkpoints)


def open_checkpoint(path: str, param_dtype: str = "float32", dtype: str | None = None) -> Opened:
  """Reads a checkpoint's config and opens its tensors without loading them."""
  if orbax_io.is_converted(path):
    cfg = orbax_io.read_model_gin(os.path.join(path, orbax_io.MODEL_GIN))
    if dtype is not None:
      cfg = dataclasses.replace(cfg, dtype=dtype)
    hf = {}
    hf_path = os.path.join(path, orbax_io.HF_CONFIG)
    if os.path.exists(hf_path):
      hf = _json(hf_path)
    return Opened("converted", cfg, hf, None)
  if os.path.isfile(path):
    if not path.endswith(".gguf"):
      raise ValueError(f"{path} is a file but not a .gguf; pass a GGUF file, a Hugging Face "
                       "directory or a converted restem_jax checkpoint directory.")
    from restem_jax.checkpoint_io.gguf_io import GGUFSource  # pylint: disable=import-outside-toplevel
    source = GGUFSource(path)
    return Opened("gguf", hfc.model_config_from_hf(source.hf_config, param_dtype, dtype),
                  source.hf_config, source)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path} does not exist.")
  from restem_jax.checkpoint_io.safetensors_io import SafetensorsReader  # pylint: disable=import-outside-toplevel
  hf = hfc.read_config_json(path)
  cfg = hfc.model_config_from_hf(hf, param_dtype, dtype)
  return Opened("huggingface", cfg, hf, SafetensorsReader(path))


def _json(path: str) -> dict:
  import json  # pylint: disable=import-outside-toplevel
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def place_params(opened: Opened, path: str, mesh: Mesh, rules: partitioning.Rules) -> Any:
  """Params on the mesh, every shard read directly into its device."""
  model = Decoder(opened.config)
  abstract = P.abstract_params(model)
  shardings = P.param_shardings(model, mesh, rules)
  if opened.kind == "converted":
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, jnp.dtype(opened.config.param_dtype)), abstract)
    return orbax_io.restore_params(path, abstract, shardings)
  weights.check_source(opened.source, opened.config, path)
  return weights.params_from_source(opened.source, opened.config, abstract, shardings)


class LoadedModel:
  """A decoder with its params on a mesh and (when found) its tokenizer."""

  def __init__(self, config: ModelConfig, params: Any, mesh: Mesh,
               rules: partitioning.Rules, vocab=None, hf_config: dict | None = None,
               path: str | None = None):
    self.config, self.params, self.mesh, self.rules = config, params, mesh, rules
    self.vocab, self.hf_config, self.path = vocab, hf_config or {}, path
    self.model = Decoder(config)
    self._samplers: dict[int, Any] = {}

  def logits(self, tokens, valid=None) -> np.ndarray:
    """int32 [batch, length] -> float32 logits [batch, length, vocab]."""
    tokens = jnp.asarray(np.asarray(tokens, np.int32))
    if tokens.ndim != 2:
      raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}.")
    if valid is not None:
      valid = jnp.asarray(np.asarray(valid, bool))
    return np.asarray(forward(self.model, self.params, tokens, valid), np.float32)

  def _sampler(self, longest: int, stop_at_eos: bool):
    from restem_jax.sampler import Sampler  # pylint: disable=import-outside-toplevel
    bucket = 32
    while bucket < longest:
      bucket *= 2
    key = (bucket, stop_at_eos)
    if key not in self._samplers:
      eos_ids = list(getattr(self.vocab, "eos_ids", ())) if stop_at_eos else []
      self._samplers[key] = Sampler(
          self.config, self.mesh, self.rules, eos_id=eos_ids[0] if eos_ids else None,
          pad_id=0, stop_sequences=[[i] for i in eos_ids[1:]], max_prompt_len=bucket,
          max_batch=8)
    return self._samplers[key]

  def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], max_new_tokens: int = 64,
               temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
               num_samples: int = 1, seed: int = 0, stop_at_eos: bool = True):
    """Continues each prompt. Strings are tokenized with the model's tokenizer
    (BOS prepended iff the model expects it) and answers are decoded to
    strings; token-id lists give token-id lists. With num_samples > 1 each
    prompt gets a list of continuations. temperature=0 is greedy.
    """
    from restem_jax.sampler import SamplingConfig  # pylint: disable=import-outside-toplevel
    as_text = bool(prompts) and isinstance(prompts[0], str)
    if as_text:
      if self.vocab is None:
        raise ValueError("this model has no tokenizer; pass token-id lists instead of strings.")
      ids = [self.vocab.encode_prompt(p) for p in prompts]
    else:
      ids = [list(map(int, p)) for p in prompts]
    config = SamplingConfig(num_samples=num_samples, temperature=temperature, top_k=top_k,
                            top_p=top_p, max_new_tokens=max_new_tokens)
    samples = self._sampler(max(len(p) for p in ids), stop_at_eos).sample(
        self.params, ids, config, seed=seed)
    out = []
    for row_tokens, row_lengths in zip(samples.tokens, samples.lengths):
      row = [t[:n].tolist() for t, n in zip(row_tokens, row_lengths)]
      if as_text:
        row = [self.vocab.decode(r) for r in row]
      out.append(row if num_samples > 1 else row[0])
    return out


def load_model(path: str, *, mesh: Mesh | None = None,
               rules: partitioning.Rules = partitioning.DEFAULT_RULES,
               param_dtype: str = "float32", dtype: str | None = None,
               tokenizer: bool = True) -> LoadedModel:
  """Loads a converted checkpoint directory, a Hugging Face directory or a GGUF file.

  mesh defaults to all devices on the data axis (params replicated, or
  sharded per `rules`); each device reads only its own shard.
  """
  path = os.fspath(path)
  mesh = mesh or partitioning.make_mesh()
  opened = open_checkpoint(path, param_dtype, dtype)
  params = place_params(opened, path, mesh, rules)
  vocab = None
  if tokenizer:
    from restem_jax import vocabularies  # pylint: disable=import-outside-toplevel
    try:
      vocab = vocabularies.vocabulary_for(path, opened.config.vocab_size)
    except (FileNotFoundError, ValueError):
      vocab = None
  return LoadedModel(opened.config, params, mesh, rules, vocab, opened.hf_config, path)
