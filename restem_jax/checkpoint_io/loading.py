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

from restem_jax.checkpoint_io import checkpoints, files, weights
from restem_jax.checkpoint_io import hf_config as hfc
from restem_jax.engine import partitioning
from restem_jax.engine.config import ModelConfig
from restem_jax.engine.engine import Engine
from restem_jax.engine.model import forward
from restem_jax.engine.sampler import SamplingConfig


@dataclasses.dataclass
class Opened:
  """A checkpoint's config and lazily-read tensors, before placement."""
  kind: str  # "converted", "huggingface" or "gguf"
  config: ModelConfig
  hf_config: dict
  source: Any  # weights.TensorSource (None for converted checkpoints)


def open_checkpoint(path: str, param_dtype: str = "float32", dtype: str | None = None) -> Opened:
  """Reads a checkpoint's config and opens its tensors without loading them."""
  if checkpoints.is_converted(path):
    cfg = checkpoints.read_model_gin(os.path.join(path, checkpoints.MODEL_GIN))
    if dtype is not None:
      cfg = dataclasses.replace(cfg, dtype=dtype)
    hf = {}
    hf_path = os.path.join(path, checkpoints.HF_CONFIG)
    if os.path.exists(hf_path):
      hf = files.read_json(hf_path)
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


def place_params(opened: Opened, path: str, engine: Engine) -> Any:
  """Params on the engine's mesh, every shard read directly into its device."""
  if opened.kind == "converted":
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, jnp.dtype(opened.config.param_dtype)),
        engine.abstract_params)
    return checkpoints.restore(path, abstract, engine.param_shardings)
  weights.check_source(opened.source, opened.config, path)
  return weights.params_from_source(opened.source, opened.config, engine.abstract_params,
                                    engine.param_shardings)


class LoadedModel:
  """A checkpoint's parameters on an `Engine` (with its tokenizer, when found)."""

  def __init__(self, engine: Engine, params: Any, hf_config: dict | None = None,
               path: str | None = None):
    self.engine, self.params = engine, params
    self.hf_config, self.path = hf_config or {}, path

  @property
  def config(self) -> ModelConfig:
    return self.engine.config

  @property
  def vocab(self):
    return self.engine.vocabulary

  def logits(self, tokens, valid=None) -> np.ndarray:
    """int32 [batch, length] -> float32 logits [batch, length, vocab]."""
    tokens = jnp.asarray(np.asarray(tokens, np.int32))
    if tokens.ndim != 2:
      raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}.")
    if valid is not None:
      valid = jnp.asarray(np.asarray(valid, bool))
    return np.asarray(forward(self.engine.decoder, self.params, tokens, valid), np.float32)

  def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], max_new_tokens: int = 64,
               temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
               num_samples: int = 1, seed: int = 0, stop_at_eos: bool = True):
    """Continues each prompt. Strings are tokenized with the model's tokenizer
    (BOS prepended iff the model expects it) and answers are decoded to
    strings; token-id lists give token-id lists. With num_samples > 1 each
    prompt gets a list of continuations. temperature=0 is greedy; generation
    stops at every EOS id of the model unless stop_at_eos=False.
    """
    as_text = bool(prompts) and isinstance(prompts[0], str)
    engine = self.engine
    ids = ([engine.encode_prompt(p) for p in prompts] if as_text
           else [list(map(int, p)) for p in prompts])
    config = SamplingConfig(num_samples=num_samples, temperature=temperature, top_k=top_k,
                            top_p=top_p, max_new_tokens=max_new_tokens)
    samples = engine.sample(self.params, ids, config, seed=seed,
                            stopping=engine.stopping(stop_at_eos=stop_at_eos))
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
               tokenizer: bool = True, max_prompt_len: int = 4096,
               sample_batch: int = 8) -> LoadedModel:
  """Loads a converted checkpoint directory, a Hugging Face directory or a GGUF file.

  mesh defaults to all devices on the data axis (params replicated, or
  sharded per `rules`); each device reads only its own shard. Prompts up to
  `max_prompt_len` tokens can be continued (the cache is sized per prompt bucket).
  """
  path = os.fspath(path)
  opened = open_checkpoint(path, param_dtype, dtype)
  vocab = None
  if tokenizer:
    from restem_jax.checkpoint_io import vocabularies  # pylint: disable=import-outside-toplevel
    try:
      vocab = vocabularies.vocabulary_for(path, opened.config.vocab_size)
    except (FileNotFoundError, ValueError):
      vocab = None
  engine = Engine(opened.config, vocab, mesh or partitioning.make_mesh(), rules,
                  max_prompt_len=max_prompt_len, sample_batch=sample_batch)
  return LoadedModel(engine, place_params(opened, path, engine), opened.hf_config, path)
