"""KV-cache sampler: one prefill per prompt, then a jitted decode loop.

Prompts are left-padded to a length bucket and batches padded to a batch
bucket, so a long E-step compiles once per (batch bucket, prompt bucket).
Every prompt is prefilled once; its keys are shared by its `num_samples`
continuations, which only keep their own generated keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from restem_jax.engine import multihost, partitioning
from restem_jax.engine.config import ConfigError, ModelConfig
from restem_jax.engine.model import KV, Decoder, causal_mask, positions_of
from restem_jax.engine.params import param_shardings


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How continuations are drawn. temperature=0 is greedy decoding."""
  num_samples: int = 1
  temperature: float = 0.7  # Paper, E-step: T=0.7, top-k 40, no top-p.
  top_k: int = 40  # 0 disables.
  top_p: float = 1.0  # 1.0 disables.
  max_new_tokens: int = 128

  def __post_init__(self):
    if self.num_samples < 1:
      raise ConfigError(f"SamplingConfig.num_samples={self.num_samples} must be >= 1.")
    if self.temperature < 0:
      raise ConfigError(f"SamplingConfig.temperature={self.temperature} must be >= 0 (0 = greedy).")
    if self.top_k < 0:
      raise ConfigError(f"SamplingConfig.top_k={self.top_k} must be >= 0 (0 = off).")
    if not 0.0 < self.top_p <= 1.0:
      raise ConfigError(f"SamplingConfig.top_p={self.top_p} must be in (0, 1] (1 = off).")
    if self.max_new_tokens < 1:
      raise ConfigError(f"SamplingConfig.max_new_tokens={self.max_new_tokens} must be >= 1.")


@dataclasses.dataclass(frozen=True)
class Stopping:
  """What ends a sample: any token in `eos_ids`, or any token sequence in `sequences`.

  A model may end a turn with several ids (Llama 3: <|end_of_text|> and
  <|eot_id|>); stop sequences end a completion before the model starts the
  next few-shot problem.
  """
  eos_ids: tuple[int, ...] = ()
  sequences: tuple[tuple[int, ...], ...] = ()

  @classmethod
  def of(cls, eos_ids: Sequence[int] = (), sequences: Sequence[Sequence[int]] = ()) -> "Stopping":
    return cls(tuple(int(i) for i in eos_ids),
               tuple(tuple(int(t) for t in s) for s in sequences if len(s)))


class Samples(NamedTuple):
  """Continuations for B prompts x N samples (host numpy arrays).

  tokens: [B, N, max_new_tokens], pad after `lengths`; lengths exclude the
  EOS token or stop sequence that ended a row; logprobs: per-token log-prob
  under the model's own distribution (temperature 1, no truncation), 0 after
  `lengths`.
  """
  tokens: np.ndarray
  lengths: np.ndarray
  logprobs: np.ndarray


def buckets(minimum: int, maximum: int) -> tuple[int, ...]:
  sizes, size = [], minimum
  while size < maximum:
    sizes.append(size)
    size *= 2
  return tuple(sizes) + (maximum,)


def pick(size: int, sizes: Sequence[int]) -> int:
  return next(b for b in sizes if b >= size)


def _choose(logits: jax.Array, key: jax.Array, config: SamplingConfig) -> jax.Array:
  """Draws one token from [V] logits according to the config."""
  if config.temperature == 0:
    return jnp.argmax(logits).astype(jnp.int32)
  logits = logits / config.temperature
  if config.top_k:
    values, indices = jax.lax.top_k(logits, min(config.top_k, logits.shape[-1]))
  else:
    indices = jnp.argsort(-logits)
    values = logits[indices]
  if config.top_p < 1.0:
    # Keep the smallest prefix of the sorted tokens whose mass reaches top_p.
    probs = jax.nn.softmax(values)
    before = jnp.cumsum(probs) - probs
    values = jnp.where(before < config.top_p, values, -jnp.inf)
  return indices[jax.random.categorical(key, values)].astype(jnp.int32)


def _ends_with(out: jax.Array, t: jax.Array, stop: tuple[int, ...]) -> jax.Array:
  """Whether out[..., :t+1] ends with the token sequence `stop`."""
  n = len(stop)
  window = jax.lax.dynamic_slice_in_dim(out, jnp.maximum(t - n + 1, 0), n, axis=-1)
  return (t + 1 >= n) & jnp.all(window == jnp.asarray(stop, out.dtype), axis=-1)


class Sampler:
  """Samples continuations of prompts from a `Decoder`, sharded over a mesh."""

  def __init__(self, model_config: ModelConfig, mesh: Mesh,
               rules: partitioning.Rules = partitioning.DEFAULT_RULES, *, pad_id: int = 0,
               max_prompt_len: int = 512, min_prompt_bucket: int = 32, max_batch: int = 16):
    self.model = Decoder(model_config)
    self.mesh, self.rules = mesh, rules
    self.pad_id = pad_id
    self.max_prompt_len = max_prompt_len
    self.prompt_buckets = buckets(min(min_prompt_bucket, max_prompt_len), max_prompt_len)
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    self.batch_buckets = buckets(data_parallel, max(max_batch, data_parallel))
    self.param_shardings = param_shardings(self.model, mesh, rules)
    self._compiled: dict[tuple[SamplingConfig, Stopping], Any] = {}
    self.num_compilations = 0

  def sample(self, params: Any, prompts: Sequence[Sequence[int]], config: SamplingConfig,
             seed: int = 0, prompt_ids: Sequence[int] | None = None,
             stopping: Stopping = Stopping(),
             progress: Callable[[int], None] | None = None) -> Samples:
    """Samples `config.num_samples` continuations of every prompt.

    A prompt's randomness depends only on (seed, its prompt id, sample index),
    never on which other prompts share its batch; prompt_ids default to the
    prompts' positions in this call. Prompts go in batches of at most the
    largest batch bucket; `progress(n)` is told after each batch of n prompts.
    """
    if prompt_ids is None:
      prompt_ids = range(len(prompts))
    prompt_ids = list(prompt_ids)
    if len(prompt_ids) != len(prompts):
      raise ValueError(f"got {len(prompts)} prompts but {len(prompt_ids)} prompt_ids.")
    for i, prompt in enumerate(prompts):
      if not 0 < len(prompt) <= self.max_prompt_len:
        raise ConfigError(
            f"prompt {i} has {len(prompt)} tokens but the sampler's max_prompt_len is "
            f"{self.max_prompt_len}: raise Sampler max_prompt_len (the KV cache size) "
            "or shorten the prompt (fewer few-shot exemplars)." if prompt else
            f"prompt {i} is empty; every prompt needs at least one token (e.g. BOS).")
    chunk = self.batch_buckets[-1]
    parts = []
    for start in range(0, len(prompts), chunk):
      parts.append(self._sample_batch(params, prompts[start:start + chunk],
                                      prompt_ids[start:start + chunk], config, stopping, seed))
      if progress is not None:
        progress(len(parts[-1].tokens))
    if not parts:
      shape = (0, config.num_samples, config.max_new_tokens)
      return Samples(np.zeros(shape, np.int32), np.zeros(shape[:2], np.int32),
                     np.zeros(shape, np.float32))
    return Samples(*(np.concatenate(field) for field in zip(*parts)))

  def _sample_batch(self, params, prompts, prompt_ids, config, stopping, seed) -> Samples:
    batch = pick(len(prompts), self.batch_buckets)
    length = pick(max(len(p) for p in prompts), self.prompt_buckets)
    tokens = np.full((batch, length), self.pad_id, np.int32)
    valid = np.zeros((batch, length), bool)
    for row, prompt in enumerate(prompts):
      tokens[row, length - len(prompt):] = prompt
      valid[row, length - len(prompt):] = True
    valid[len(prompts):, -1] = True  # Filler rows: one token, discarded.
    base = jax.random.PRNGKey(seed)
    keys = np.zeros((batch, 2), np.uint32)
    keys[:len(prompts)] = np.asarray(jax.vmap(lambda i: jax.random.fold_in(base, i))(
        jnp.asarray(prompt_ids, jnp.uint32)))
    active = np.arange(batch) < len(prompts)
    sharding = partitioning.batch_sharding(self.mesh, self.rules)
    out = self._function(config, stopping)(
        params, *(multihost.global_array(x, sharding) for x in (tokens, valid, keys, active)))
    n = len(prompts)
    return Samples(*(np.asarray(x)[:n] for x in out))

  def _function(self, config: SamplingConfig, stopping: Stopping):
    if (config, stopping) not in self._compiled:
      batch = partitioning.batch_sharding(self.mesh, self.rules)
      # Outputs are replicated: every host reads every sample (and scores them alike).
      self._compiled[config, stopping] = jax.jit(
          lambda *args: self._generate(config, stopping, *args),
          in_shardings=(self.param_shardings, batch, batch, batch, batch),
          out_shardings=partitioning.replicated(self.mesh))
    return self._compiled[config, stopping]

  def _generate(self, config: SamplingConfig, stopping: Stopping, params, tokens, valid, keys,
                active):
    """Traced once per bucket shape: prefill, then the decode while_loop."""
    self.num_compilations += 1
    with partitioning.sharding_context(self.mesh, self.rules):
      context, state = self._prefill(config, params, tokens, valid, keys, active)
      g = config.max_new_tokens
      final = jax.lax.while_loop(
          lambda s: (s["t"] < g) & ~jnp.all(s["done"]),
          lambda s: self._step(config, stopping, params, context, s), state)
      kept = jnp.arange(g) < final["lengths"][..., None]
      out = jnp.where(kept, final["out"], self.pad_id)
      return out, final["lengths"], jnp.where(kept, final["logprobs"], 0.0)

  def _prefill(self, config, params, tokens, valid, keys, active) -> tuple[Context, dict]:
    """Runs the prompts once; returns what every step reads and the loop's first state."""
    b, n, g = tokens.shape[0], config.num_samples, config.max_new_tokens
    cfg = self.model.cfg
    # Prompts are left-padded: the last position is every row's last prompt token.
    logits, prefix = self.model.apply({"params": params}, tokens[:, None],
                                      positions_of(valid)[:, None], causal_mask(valid[:, None]),
                                      last_only=True)
    prefix = KV(*(partitioning.constrain(a[:, :, 0], (None, "act_batch", "act_kv_heads", None, None))
                  for a in prefix))
    row_keys = jax.vmap(lambda k: jax.vmap(lambda i: jax.random.fold_in(k, i))(jnp.arange(n)))(keys)
    context = Context(prefix, valid, valid.sum(axis=-1), row_keys)
    first, first_lp = _draw(jnp.broadcast_to(logits[:, 0, -1:], (b, n, cfg.vocab_size)),
                            row_keys, 0, config)
    shape = (cfg.num_layers, b, n, cfg.num_kv_heads, g, cfg.head_dim)
    cache = KV(*(partitioning.constrain(jnp.zeros(shape, jnp.dtype(cfg.dtype)),
                                        (None, "act_batch", "act_samples", "act_kv_heads", None, None))
                 for _ in range(2)))
    state = dict(
        t=jnp.int32(0), token=first, logprob=first_lp, cache=cache,
        out=jnp.full((b, n, g), self.pad_id, jnp.int32), logprobs=jnp.zeros((b, n, g), jnp.float32),
        done=jnp.broadcast_to(~active[:, None], (b, n)), lengths=jnp.full((b, n), g, jnp.int32))
    return context, state

  def _step(self, config, stopping, params, context: Context, s: dict) -> dict:
    """Records the current token, checks stops, and draws the next token: one decode step."""
    t = s["t"]
    b, n, g = s["out"].shape
    out = s["out"].at[:, :, t].set(jnp.where(s["done"], self.pad_id, s["token"]))
    logprobs = s["logprobs"].at[:, :, t].set(jnp.where(s["done"], 0.0, s["logprob"]))
    stop_len = jnp.zeros((b, n), jnp.int32)
    for eos in stopping.eos_ids:
      stop_len = jnp.where(s["token"] == eos, 1, stop_len)
    for stop in (seq for seq in stopping.sequences if len(seq) <= g):  # Longer never fit.
      stop_len = jnp.where((stop_len == 0) & _ends_with(out, t, stop), len(stop), stop_len)
    finished = ~s["done"] & (stop_len > 0)
    lengths = jnp.where(finished, t + 1 - stop_len, s["lengths"])
    done = s["done"] | finished
    pos = (context.prompt_len[:, None] + t)[:, :, None]
    own_mask = jnp.broadcast_to(jnp.arange(g) <= t, (b, n, 1, g))
    step_logits, cache = self.model.apply(
        {"params": params}, s["token"][:, :, None], jnp.broadcast_to(pos, (b, n, 1)), own_mask,
        prefix=context.prefix, prefix_mask=context.prefix_mask, cache=s["cache"], cache_index=t)
    token, logprob = _draw(step_logits[:, :, 0], context.row_keys, t + 1, config)
    return dict(t=t + 1, token=token, logprob=logprob, cache=cache, out=out,
                logprobs=logprobs, done=done, lengths=lengths)

  def compile_ahead(self, abstract_params: Any, config: SamplingConfig,
                    stopping: Stopping = Stopping(), *, parts: bool = False) -> dict[str, Any]:
    """Compiles the largest bucket from shapes alone, for any mesh (e.g. a TPU topology).

    Returns {"sample": the whole program}, or with `parts` {"prefill", "decode_step"}:
    compiled cost analysis counts a loop body once, so per-token costs are
    read from one decode step.
    """
    sharding = partitioning.batch_sharding(self.mesh, self.rules)
    batch, length = self.batch_buckets[-1], self.prompt_buckets[-1]
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    params = partitioning.abstract_on(abstract_params, self.param_shardings)
    inputs = (params, spec((batch, length), jnp.int32), spec((batch, length), jnp.bool_),
              spec((batch, 2), jnp.uint32), spec((batch,), jnp.bool_))
    if not parts:
      return {"sample": self._function(config, stopping).lower(*inputs).compile()}

    def in_context(fn):
      def traced(*args):
        with partitioning.sharding_context(self.mesh, self.rules):
          return fn(*args)
      return traced

    prefill_fn = lambda *a: self._prefill(config, *a)
    prefill = jax.jit(in_context(prefill_fn)).lower(*inputs).compile()
    context, state = partitioning.abstract_on(jax.eval_shape(prefill_fn, *inputs),
                                              prefill.output_shardings)
    step = jax.jit(in_context(lambda p, c, s: self._step(config, stopping, p, c, s)))
    return {"prefill": prefill, "decode_step": step.lower(params, context, state).compile()}


class Context(NamedTuple):
  """What every decode step reads and none changes: the prompts' keys and positions."""
  prefix: KV
  prefix_mask: jax.Array
  prompt_len: jax.Array
  row_keys: jax.Array


def _draw(logits: jax.Array, row_keys: jax.Array, t: jax.Array | int, config: SamplingConfig
          ) -> tuple[jax.Array, jax.Array]:
  """Step t's token for every [B, N] row, and its log-prob under the untruncated model."""
  step_keys = jax.vmap(jax.vmap(lambda k: jax.random.fold_in(k, t)))(row_keys)
  token = jax.vmap(jax.vmap(lambda lg, k: _choose(lg, k, config)))(logits, step_keys)
  logprob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[..., None], -1)[..., 0]
  return token, logprob
