"""Text in, text out: prompts are encoded, sampled, decoded and cut at stop strings."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np
import seqio
from jax.sharding import Mesh
from tqdm import tqdm

from restem_jax import partitioning
from restem_jax.config import ModelConfig
from restem_jax.sampler import Sampler, SamplingConfig


@dataclasses.dataclass(frozen=True)
class Completion:
  text: str
  logprob: float  # Sum of the model's log-probs of the kept tokens.
  num_tokens: int


class TextGenerator:
  """Samples text continuations from a model with a seqio vocabulary."""

  def __init__(self, model_config: ModelConfig, mesh: Mesh, vocabulary: seqio.Vocabulary,
               stop_strings: Sequence[str] = (), *, max_prompt_len: int, max_batch: int,
               rules: partitioning.Rules = partitioning.DEFAULT_RULES):
    self.vocabulary = vocabulary
    self.stop_strings = tuple(stop_strings)
    self.sampler = Sampler(
        model_config, mesh, rules, eos_id=vocabulary.eos_id, pad_id=vocabulary.pad_id,
        # The canonical tokenisation stops the loop early; the text cut below
        # catches stop strings that were tokenised differently.
        stop_sequences=[vocabulary.encode(s) for s in self.stop_strings],
        max_prompt_len=max_prompt_len, max_batch=max_batch)

  def encode_prompt(self, prompt: str) -> list[int]:
    return list(self.vocabulary.encode(prompt))

  def generate(self, params: Any, prompts: Sequence[str], config: SamplingConfig, seed: int,
               prompt_ids: Sequence[int], desc: str | None = None) -> list[list[Completion]]:
    """`config.num_samples` completions per prompt, reproducible per (seed, prompt id).

    With `desc`, a progress bar counts prompts (one sampler batch at a time).
    """
    encoded, ids = [self.encode_prompt(p) for p in prompts], list(prompt_ids)
    # Randomness depends only on (seed, prompt id, sample): chunking changes no sample.
    chunk = self.sampler.batch_buckets[-1]
    completions: list[list[Completion]] = []
    bar = tqdm(total=len(prompts), desc=desc, unit="problem", leave=False,
               disable=desc is None or jax.process_index() != 0)
    for start in range(0, len(prompts), chunk):
      out = self.sampler.sample(params, encoded[start:start + chunk], config, seed=seed,
                                prompt_ids=ids[start:start + chunk])
      completions.extend(
          [self._completion(tokens[:length], logprobs[:length])
           for tokens, length, logprobs in zip(row_tokens, row_lengths, row_logprobs)]
          for row_tokens, row_lengths, row_logprobs in zip(out.tokens, out.lengths, out.logprobs))
      bar.update(len(out.tokens))
    bar.close()
    return completions

  def _completion(self, tokens: np.ndarray, logprobs: np.ndarray) -> Completion:
    text = self.vocabulary.decode(tokens.tolist())
    cut = min([text.find(s) for s in self.stop_strings if s in text] or [len(text)])
    return Completion(text[:cut], float(logprobs.sum()), int(len(tokens)))
