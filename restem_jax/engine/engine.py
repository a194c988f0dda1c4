"""The engine: one object owns a model's config, mesh, sharding rules and vocabulary.

Everything that touches parameters goes through it: encoding text the
model's way (BOS exactly once where the model wants it, every EOS id it ends
turns with), generating text with per-token log-probs, scoring given tokens,
training and checkpoints. Entry points build one at the edge; nothing below
them builds a sampler, trainer or mesh of its own, so the E-step, the M-step,
evaluation and the SFT control cannot disagree on BOS, EOS or shardings.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from restem_jax.checkpoint_io import checkpoints
from restem_jax.engine import params as P
from restem_jax.engine import multihost, partitioning, sampling_layout
from restem_jax.engine.config import ConfigError, ModelConfig
from restem_jax.engine.model import Decoder
from restem_jax.engine.sampler import Sampler, SamplingConfig, Samples, Stopping, buckets, pick
from restem_jax.engine.trainer import Examples, OptimizerConfig, Trainer, token_logprobs

if TYPE_CHECKING:  # Annotations only: sampling and training need no TensorFlow.
  import seqio


@dataclasses.dataclass(frozen=True)
class Conventions:
  """How a model expects its text: BOS first or not, and which ids end a turn."""
  bos_id: int | None
  add_bos: bool
  eos_ids: tuple[int, ...]
  pad_id: int

  @classmethod
  def of(cls, vocabulary: seqio.Vocabulary | None) -> "Conventions":
    """Read off a vocabulary (restem_jax's model vocabularies carry them; seqio's do not)."""
    if vocabulary is None:
      return cls(None, False, (), 0)
    eos_ids = tuple(getattr(vocabulary, "eos_ids", ()) or ())
    if not eos_ids and vocabulary.eos_id is not None:
      eos_ids = (vocabulary.eos_id,)
    bos_id = getattr(vocabulary, "bos_id", None)
    add_bos = bool(getattr(vocabulary, "add_bos", False)) and bos_id is not None
    return cls(bos_id, add_bos, tuple(int(i) for i in eos_ids), int(vocabulary.pad_id))


def encode_prompt(vocabulary: seqio.Vocabulary, text: str,
                  conventions: Conventions | None = None) -> list[int]:
  """Prompt ids as the model expects them: BOS first iff the model wants it, never twice.

  A chat template that already wrote BOS into the text keeps that one.
  """
  conventions = conventions or Conventions.of(vocabulary)
  ids = list(vocabulary.encode(text))
  if conventions.add_bos and (not ids or ids[0] != conventions.bos_id):
    ids = [conventions.bos_id] + ids
  return ids


@dataclasses.dataclass(frozen=True)
class Completion:
  """One sampled continuation, cut before its EOS or stop string."""
  text: str
  tokens: tuple[int, ...]
  logprob: float  # Sum of the model's log-probs of `tokens`.


class Engine:
  """A decoder on a mesh with its vocabulary: the one door to parameters."""

  def __init__(self, model: ModelConfig, vocabulary: seqio.Vocabulary | None, mesh: Mesh,
               rules: partitioning.Rules = partitioning.DEFAULT_RULES, *,
               max_prompt_len: int = 512, sample_batch: int = 16, sample_tensor: int = 0):
    self.config, self.vocabulary, self.mesh, self.rules = model, vocabulary, mesh, rules
    self.conventions = Conventions.of(vocabulary)
    self.decoder = Decoder(model)
    self.abstract_params = P.abstract_params(self.decoder)
    self.param_shardings = P.param_shardings(self.decoder, mesh, rules)
    self.sample_mesh = sampling_layout.sampling_mesh(mesh, model, sample_tensor,
                                                     sampling_layout.device_memory(mesh))
    # sample_batch is per data-parallel group: a slice of n chips decodes n times the lanes.
    self.sampler = Sampler(model, self.sample_mesh, rules, pad_id=self.conventions.pad_id,
                           max_prompt_len=max_prompt_len,
                           max_batch=sample_batch * self.sample_mesh.shape["data"])
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    self._score_buckets = buckets(data_parallel, max(sample_batch, data_parallel))
    self._trainers: dict[tuple[OptimizerConfig, int], Trainer] = {}
    self._score = None

  # --------------------------------------------------------------------------- text

  def _vocab(self) -> seqio.Vocabulary:
    if self.vocabulary is None:
      raise ValueError("this engine has no vocabulary (the checkpoint has no tokenizer); pass "
                       "token ids instead of text.")
    return self.vocabulary

  def encode_prompt(self, text: str) -> list[int]:
    """Prompt ids the model's way (see `encode_prompt`)."""
    return encode_prompt(self._vocab(), text, self.conventions)

  def encode_target(self, text: str) -> list[int]:
    """Target ids followed by the model's (first) EOS, which the M-step learns to emit."""
    if not self.conventions.eos_ids:
      raise ConfigError("the vocabulary has no EOS id, so a fine-tuned model could never learn "
                        "to stop; use a tokenizer with an EOS token.")
    return list(self._vocab().encode(text)) + [self.conventions.eos_ids[0]]

  def stopping(self, stop_strings: Sequence[str] = (), stop_at_eos: bool = True) -> Stopping:
    """Every EOS id of the model, plus the canonical tokenisation of each stop string."""
    sequences = [self._vocab().encode(s) for s in stop_strings] if stop_strings else []
    return Stopping.of(self.conventions.eos_ids if stop_at_eos else (), sequences)

  # --------------------------------------------------------------------------- parameters

  def init_params(self, seed: int) -> Any:
    """Random parameters, created in their shards."""
    return P.init_params(self.decoder, jax.random.PRNGKey(seed), self.mesh, self.rules)

  def restore(self, path: str) -> Any:
    """Parameters from an Orbax checkpoint, each host reading its own shards."""
    return checkpoints.restore(path, self.abstract_params, self.param_shardings)

  def save(self, path: str, params: Any) -> None:
    checkpoints.save(path, params)

  def place(self, params: Any) -> Any:
    """Host or differently placed parameters onto this engine's shardings."""
    return P.place(params, self.param_shardings)

  # --------------------------------------------------------------------------- generation

  def sample(self, params: Any, prompts: Sequence[Sequence[int]], config: SamplingConfig,
             seed: int = 0, prompt_ids: Sequence[int] | None = None,
             stopping: Stopping | None = None, desc: str | None = None) -> Samples:
    """Token-level sampling; stops on every EOS id unless `stopping` says otherwise.

    With `desc`, a progress bar (process 0) counts prompts.
    """
    bar = tqdm(total=len(prompts), desc=desc, unit="problem", leave=False,
               disable=desc is None or jax.process_index() != 0)
    try:
      return self.sampler.sample(params, prompts, config, seed, prompt_ids,
                                 self.stopping() if stopping is None else stopping, bar.update)
    finally:
      bar.close()

  def generate(self, params: Any, prompts: Sequence[str], config: SamplingConfig, seed: int,
               prompt_ids: Sequence[int], stop_strings: Sequence[str] = (),
               desc: str | None = None) -> list[list[Completion]]:
    """`config.num_samples` completions per prompt, reproducible per (seed, prompt id).

    A completion ends at any EOS id or stop string; the text is also cut at a
    stop string that was tokenised differently from its canonical form.
    """
    out = self.sample(params, [self.encode_prompt(p) for p in prompts], config, seed,
                      prompt_ids, self.stopping(stop_strings), desc)
    return [self._completions(row, stop_strings) for row in zip(*out)]

  def stream(self, params: Any, prompts: Sequence[str], config: SamplingConfig, seed: int,
             prompt_ids: Sequence[int], stop_strings: Sequence[str] = (),
             layout: Sequence[str] | None = None) -> Iterator[tuple[int, list[Completion]]]:
    """As `generate`, but yields (i, prompt i's completions) as each prompt finishes.

    `layout`: prompts whose shapes the call takes (`Sampler.stream`)."""
    layout_ids = None if layout is None else [self.encode_prompt(p) for p in layout]
    for i, row in self.sampler.stream(params,
                                      [self.encode_prompt(p) for p in prompts], config,
                                      seed, prompt_ids, self.stopping(stop_strings), layout_ids):
      yield i, self._completions(row, stop_strings)

  def _completions(self, row: Samples, stop_strings: Sequence[str]) -> list[Completion]:
    return [self._completion(tokens[:length], logprobs[:length], stop_strings)
            for tokens, length, logprobs in zip(*row)]

  def _completion(self, tokens: np.ndarray, logprobs: np.ndarray,
                  stop_strings: Sequence[str]) -> Completion:
    text = self._vocab().decode(tokens.tolist())
    cut = min([text.find(s) for s in stop_strings if s in text] or [len(text)])
    return Completion(text[:cut], tuple(int(t) for t in tokens), float(logprobs.sum()))

  # --------------------------------------------------------------------------- scoring

  def token_logprobs(self, params: Any, prompts: Sequence[Sequence[int]],
                     completions: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """log p(completion token | prompt, earlier completion tokens), by the training forward.

    Rows are padded to length and batch buckets, so scoring compiles once per bucket.
    """
    chunk = self._score_buckets[-1]
    out: list[np.ndarray] = []
    for start in range(0, len(prompts), chunk):
      out.extend(self._score_batch(params, prompts[start:start + chunk],
                                   completions[start:start + chunk]))
    return out

  def _score_batch(self, params, prompts, completions) -> list[np.ndarray]:
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    width = pick(max(lengths), buckets(32, max(32, max(lengths))))
    tokens = np.full((pick(len(lengths), self._score_buckets), width),
                     self.conventions.pad_id, np.int32)
    valid = np.zeros(tokens.shape, bool)
    for i, (p, c) in enumerate(zip(prompts, completions)):
      tokens[i, :lengths[i]] = list(p) + list(c)
      valid[i, :lengths[i]] = True
    batch = partitioning.batch_sharding(self.mesh, self.rules)
    if self._score is None:
      def score(params, tokens, valid):
        with partitioning.sharding_context(self.mesh, self.rules):
          return token_logprobs(self.decoder, params, tokens, valid)
      self._score = jax.jit(score, in_shardings=(self.param_shardings, batch, batch),
                            out_shardings=partitioning.replicated(self.mesh))
    logprobs = np.asarray(self._score(params, multihost.global_array(tokens, batch),
                                      multihost.global_array(valid, batch)))
    # Column t scores token t + 1.
    return [logprobs[i, len(p) - 1:lengths[i] - 1] for i, p in enumerate(prompts)]

  # --------------------------------------------------------------------------- training

  def trainer(self, optimizer: OptimizerConfig, grad_accum_steps: int = 1) -> Trainer:
    """The jitted train step for this model, mesh and rules (one per optimizer)."""
    key = (optimizer, grad_accum_steps)
    if key not in self._trainers:
      self._trainers[key] = Trainer(self.config, optimizer, self.mesh, self.rules,
                                    grad_accum_steps=grad_accum_steps)
    return self._trainers[key]

  def examples(self, prompts: Sequence[str], targets: Sequence[str], seq_len: int,
               rewards: Sequence[float] | None = None) -> tuple[Examples, int]:
    """Training rows (prompt ids + target ids + EOS, right-padded) and how many were dropped.

    The loss sees the target and its EOS only; rows longer than seq_len are dropped.
    """
    rewards = [1.0] * len(prompts) if rewards is None else list(rewards)
    rows = []
    for prompt, target, reward in zip(prompts, targets, rewards):
      p, t = self.encode_prompt(prompt), self.encode_target(target)
      if len(p) + len(t) <= seq_len:
        rows.append((p, t, reward))
    n = len(rows)
    out = Examples(np.full((n, seq_len), self.conventions.pad_id, np.int32),
                   np.zeros((n, seq_len), np.float32), np.zeros((n, seq_len), bool),
                   np.zeros(n, np.float32))
    for i, (p, t, reward) in enumerate(rows):
      out.tokens[i, :len(p) + len(t)] = p + t
      out.target_mask[i, len(p):len(p) + len(t)] = 1
      out.valid[i, :len(p) + len(t)] = True
      out.reward[i] = reward
    return out, len(prompts) - n
