"""Fine-tuning step: reward-weighted NLL on target tokens, sharded with pjit.

With binary rewards the objective E[r log p(y|x)] is plain SFT on the kept
samples; the weight is kept general so a sample with reward 0 contributes
exactly nothing (it adds neither loss nor tokens to the normaliser).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from restem_jax.engine import multihost, partitioning
from restem_jax.engine.config import ConfigError, ModelConfig, at_least
from restem_jax.engine.layout import round_up
from restem_jax.engine.model import Decoder, causal_mask, positions_of
from restem_jax.engine.params import abstract_params, param_shardings, place

# tokens [B,T] int32, target_mask [B,T], valid [B,T], reward [B]; the step adds at and
# at_weight [B,A] (`with_target_positions`).
Batch = dict[str, Any]
BATCH_DTYPES = {"tokens": np.int32, "target_mask": np.float32, "valid": bool, "reward": np.float32,
                "at": np.int32, "at_weight": np.float32}


class Examples(NamedTuple):
  """Tokenised training rows as fixed-width arrays (one compiled train step)."""
  tokens: np.ndarray
  target_mask: np.ndarray
  valid: np.ndarray
  reward: np.ndarray


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer and learning-rate schedule. The paper states none of these."""
  # Adafactor is what the PaLM family was trained with; "adamw" is the
  # usual choice for open models.
  name: str = "adafactor"
  learning_rate: float = 1e-4
  schedule: str = "constant"  # constant | cosine | linear | rsqrt, after warmup.
  warmup_steps: int = 0
  decay_steps: int = 1000  # Horizon of cosine / linear decay.
  weight_decay: float = 0.0
  max_grad_norm: float = 1.0  # 0 disables clipping.
  b1: float = 0.9
  b2: float = 0.95

  def __post_init__(self):
    if self.name not in ("adafactor", "adamw"):
      raise ConfigError(f"OptimizerConfig.name={self.name!r} is unknown; use 'adafactor' or 'adamw'.")
    if self.schedule not in ("constant", "cosine", "linear", "rsqrt"):
      raise ConfigError(f"OptimizerConfig.schedule={self.schedule!r} is unknown; use "
                        "'constant', 'cosine', 'linear' or 'rsqrt'.")
    at_least(self, warmup_steps=0, decay_steps=1, weight_decay=0.0, max_grad_norm=0.0,
             b1=0.0, b2=0.0)
    if self.learning_rate <= 0:
      raise ConfigError(f"OptimizerConfig.learning_rate={self.learning_rate} must be > 0.")


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  warmup = max(cfg.warmup_steps, 1)
  ramp = lambda step: jnp.minimum(1.0, (step + 1) / warmup)
  decay_steps = max(cfg.decay_steps - cfg.warmup_steps, 1)
  after = lambda step: jnp.maximum(step - cfg.warmup_steps, 0)
  decays = {
      "constant": lambda step: 1.0,
      "cosine": lambda step: 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(after(step) / decay_steps, 1.0))),
      "linear": lambda step: jnp.maximum(1.0 - after(step) / decay_steps, 0.0),
      "rsqrt": lambda step: jnp.sqrt(warmup / jnp.maximum(step + 1, warmup)),
  }
  decay = decays[cfg.schedule]
  return lambda step: cfg.learning_rate * ramp(step) * decay(step)


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  lr = learning_rate_schedule(cfg)
  if cfg.name == "adafactor":
    opt = optax.adafactor(learning_rate=lr, multiply_by_parameter_scale=False,
                          weight_decay_rate=cfg.weight_decay or None)
  else:
    opt = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay)
  if cfg.max_grad_norm:
    opt = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), opt)
  return opt


class TrainState(NamedTuple):
  step: jax.Array
  params: Any
  opt_state: Any


def token_logprobs(model: Decoder, params: Any, tokens: jax.Array, valid: jax.Array) -> jax.Array:
  """log p(tokens[:, t] | tokens[:, :t]) for t >= 1, [B, T-1]: the training forward pass."""
  valid = valid.astype(bool)
  logits, _ = model.apply({"params": params}, tokens[:, None], positions_of(valid)[:, None],
                          causal_mask(valid[:, None]))
  return logprobs_of_logits(logits[:, 0], tokens)


def logprobs_of_logits(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """Log-probs [B, T-1] of tokens[:, 1:] under next-token logits [B, T, V]."""
  logp = jax.nn.log_softmax(logits[:, :-1])
  return jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]


# Trimmed batches are a multiple of this wide: few compiled shapes (a
# compile costs about 2.5 s on SmolLM2 here), while rows of 84-88 tokens
# run 88 wide rather than 96 (the SmolLM2 example's M-step batches).
WIDTH_GRANULE = 8


def _granular(n: int, limit: int) -> int:
  """n rounded up to a multiple of WIDTH_GRANULE (at least one), at most `limit`."""
  return min(limit, round_up(max(n, 1), WIDTH_GRANULE))


def trim_padding(batch: Batch) -> Batch:
  """The batch without the trailing columns no row uses, its width rounded up to 8.

  Rows are as long as FinetuneConfig.seq_len allows, but a batch of short
  ones (a one-line answer under a 64-token prompt in 96) need not pay for
  the columns all of them leave empty.
  """
  valid = np.asarray(batch["valid"], bool)
  used = np.flatnonzero(valid.any(axis=0))
  width = _granular(int(used[-1]) + 1 if used.size else 1, valid.shape[1])
  return {name: value if name == "reward" else np.asarray(value)[:, :width]
          for name, value in batch.items()}


def weighted_nll(model: Decoder, params: Any, batch: Batch) -> tuple[jax.Array, jax.Array]:
  """(sum of reward * NLL over target tokens, sum of reward * target tokens).

  The vocabulary head runs only at batch["at"], the positions whose next
  token is a target (a one-line answer is a third of a row, and the head a
  fifth of a small model's work); without it, at every position.
  """
  tokens, valid = batch["tokens"], batch["valid"].astype(bool)
  at, weight = batch.get("at"), batch.get("at_weight")
  if at is None:
    b, t = tokens.shape
    at = jnp.broadcast_to(jnp.arange(t - 1), (b, t - 1))
    weight = batch["target_mask"][:, 1:] * valid[:, 1:]
  logits, _ = model.apply({"params": params}, tokens[:, None], positions_of(valid)[:, None],
                          causal_mask(valid[:, None]), at=at[:, None])
  logp = jax.nn.log_softmax(logits[:, 0])
  next_tokens = jnp.take_along_axis(tokens, at + 1, axis=1)
  logprobs = jnp.take_along_axis(logp, next_tokens[..., None], axis=-1)[..., 0]
  weight = weight * batch["reward"][:, None]
  return jnp.sum(-logprobs * weight), jnp.sum(weight)


def with_target_positions(batch: Batch) -> Batch:
  """Adds at [B, A], each row's positions whose next token is a target (padded with 0),
  and at_weight [B, A] (0 on padding); A is the most in a row, rounded up to 8."""
  weight = np.asarray(batch["target_mask"])[:, 1:] * np.asarray(batch["valid"])[:, 1:]
  counts = (weight > 0).sum(axis=1)
  width = _granular(int(counts.max()), weight.shape[1])
  at = np.zeros((len(weight), width), np.int32)
  at_weight = np.zeros((len(weight), width), np.float32)
  for row, count in enumerate(counts):
    where = np.flatnonzero(weight[row] > 0)
    at[row, :count], at_weight[row, :count] = where, weight[row, where]
  return dict(batch, at=at, at_weight=at_weight)


class Trainer:
  """Jitted, sharded train step over a model, an optimizer and a mesh."""

  def __init__(self, model_config: ModelConfig, optimizer_config: OptimizerConfig, mesh: Mesh,
               rules: partitioning.Rules = partitioning.DEFAULT_RULES, *,
               grad_accum_steps: int = 1, unroll_microbatches: bool = False):
    """`unroll_microbatches`: unroll the loop over microbatches (the plan's cost probes,
    since XLA counts a loop body once)."""
    if grad_accum_steps < 1:
      raise ConfigError(f"grad_accum_steps={grad_accum_steps} must be >= 1.")
    self.unroll_microbatches = unroll_microbatches
    self.model = Decoder(model_config)
    self.optimizer_config = optimizer_config
    self.optimizer = make_optimizer(optimizer_config)
    self.mesh, self.rules = mesh, rules
    self.grad_accum_steps = grad_accum_steps
    self.param_shardings = param_shardings(self.model, mesh, rules)
    opt_shardings = self._opt_state_shardings(abstract_params(self.model))
    self.state_shardings = TrainState(partitioning.replicated(mesh), self.param_shardings,
                                      opt_shardings)
    self.batch_sharding = batch_sharding = partitioning.batch_sharding(mesh, rules)
    self._step = jax.jit(self._train_step, in_shardings=(self.state_shardings, batch_sharding),
                         out_shardings=(self.state_shardings, partitioning.replicated(mesh)),
                         donate_argnums=0)
    self._loss = jax.jit(self._loss_terms, in_shardings=(self.param_shardings, batch_sharding),
                         out_shardings=partitioning.replicated(mesh))
    self._gradients = None  # Jitted on first use (tests and tools, not the M-step).

  def _opt_state_shardings(self, abstract_params):
    abstract_state = jax.eval_shape(self.optimizer.init, abstract_params)
    replicated = partitioning.replicated(self.mesh)
    # Moments shaped like their parameter share its sharding; factored or
    # scalar statistics are small and replicated.
    return optax.tree_map_params(
        self.optimizer,
        lambda leaf, sharding, param: sharding if leaf.shape == param.shape else replicated,
        abstract_state, self.param_shardings, abstract_params,
        transform_non_params=lambda _: replicated)

  def init_state(self, params: Any, *, donate: bool = False) -> TrainState:
    """A fresh optimizer on `params`.

    The step donates its state, so by default the state holds a private copy;
    with `donate` it takes `params`' own buffers (no second copy alive, the
    M-step's case) and the caller must not use `params` afterwards.
    """
    params = place(params, self.param_shardings)
    if not donate:
      params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
    opt_init = jax.jit(self.optimizer.init, in_shardings=(self.param_shardings,),
                       out_shardings=self.state_shardings.opt_state)
    return TrainState(multihost.global_array(np.int32(0), self.state_shardings.step), params,
                      opt_init(params))

  def step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, float]]:
    """One optimizer update on `batch` (its rows split into grad_accum_steps microbatches)."""
    self._check_rows(batch)
    state, metrics = self._step(state, self._global(batch))
    return state, {k: float(v) for k, v in metrics.items()}

  def _check_rows(self, batch: Batch) -> None:
    rows = len(batch["tokens"])
    if rows % self.grad_accum_steps:
      raise ConfigError(f"batch of {rows} rows is not divisible by grad_accum_steps="
                        f"{self.grad_accum_steps}.")

  def gradients(self, params: Any, batch: Batch) -> tuple[float, Any]:
    """(mean reward-weighted NLL per target token, its gradient) on `batch`, computed as
    the train step computes them: over grad_accum_steps microbatches."""
    self._check_rows(batch)
    if self._gradients is None:
      def gradients(params, batch):
        with partitioning.sharding_context(self.mesh, self.rules):
          loss, _, grads = self._mean_gradients(params, batch)
        return loss, grads
      self._gradients = jax.jit(
          gradients, in_shardings=(self.param_shardings, self.batch_sharding),
          out_shardings=(partitioning.replicated(self.mesh), self.param_shardings))
    loss, grads = self._gradients(params, self._global(batch))
    return float(loss), grads

  def loss(self, params: Any, batch: Batch) -> float:
    """Mean reward-weighted NLL per target token."""
    total, weight = self._loss(params, self._global(batch))
    return float(total / jnp.maximum(weight, 1e-9))

  def abstract_state(self) -> TrainState:
    """Shapes, dtypes and shardings of the train state, without allocating it."""
    abstract = abstract_params(self.model)
    state = TrainState(jax.ShapeDtypeStruct((), jnp.int32), abstract,
                       jax.eval_shape(self.optimizer.init, abstract))
    return partitioning.abstract_on(state, self.state_shardings)

  def compile_ahead(self, rows: int, seq_len: int) -> Any:
    """The train step compiled from shapes alone (for any mesh, e.g. a TPU topology)."""
    state = self.abstract_state()
    width = {"reward": (), "at": (seq_len - 1,), "at_weight": (seq_len - 1,)}
    batch = {name: jax.ShapeDtypeStruct((rows,) + width.get(name, (seq_len,)), dtype,
                                        sharding=self.batch_sharding)
             for name, dtype in BATCH_DTYPES.items()}
    return self._step.lower(state, batch).compile()

  def _loss_terms(self, params, batch):
    with partitioning.sharding_context(self.mesh, self.rules):
      return weighted_nll(self.model, params, batch)

  def _accumulated(self, params: Any, batch: Batch) -> tuple[jax.Array, jax.Array, Any]:
    """(sum of reward * NLL, sum of reward * target tokens, gradient of the first) over the
    batch, one microbatch of rows / grad_accum_steps at a time.

    Both sums add over microbatches exactly as over rows, so the normalised loss and
    gradient are the unsplit batch's (up to float rounding); only one microbatch's
    activations are alive at a time. Microbatch j takes rows j, j + k, j + 2k, ...: each
    device keeps its own rows of every microbatch, where contiguous blocks of rows would
    put a microbatch on a fraction of the devices.
    """
    grad_fn = jax.value_and_grad(lambda p, b: weighted_nll(self.model, p, b), has_aux=True)
    k = self.grad_accum_steps
    if k == 1:  # No accumulator: one gradient-sized buffer fewer.
      (total, weight), grads = grad_fn(params, batch)
      return total, weight, grads

    def split(x):
      x = jnp.moveaxis(x.reshape((-1, k) + x.shape[1:]), 1, 0)
      return partitioning.constrain(x, (None, "act_batch") + (None,) * (x.ndim - 2))

    def accumulate(carry, b):
      (total, weight), grads = grad_fn(params, b)
      return jax.tree.map(jnp.add, carry, (total, weight, grads)), None

    # The gradient accumulates in the parameters' sharding (FSDP: each device its shard).
    zeros = (jnp.float32(0), jnp.float32(0), jax.lax.with_sharding_constraint(
        jax.tree.map(jnp.zeros_like, params), self.param_shardings))
    (total, weight, grads), _ = jax.lax.scan(accumulate, zeros, jax.tree.map(split, batch),
                                             unroll=k if self.unroll_microbatches else 1)
    return total, weight, grads

  def _mean_gradients(self, params: Any, batch: Batch) -> tuple[jax.Array, jax.Array, Any]:
    """(loss per target token, reward-weighted target tokens, the loss's gradient)."""
    total, weight, grads = self._accumulated(params, batch)
    norm = jnp.maximum(weight, 1e-9)
    return total / norm, weight, jax.tree.map(lambda g: g / norm, grads)

  def _train_step(self, state: TrainState, batch: Batch):
    with partitioning.sharding_context(self.mesh, self.rules):
      loss, weight, grads = self._mean_gradients(state.params, batch)
      updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      metrics = {"loss": loss, "target_tokens": weight,
                 "grad_norm": optax.tree.norm(grads)}
      return TrainState(state.step + 1, params, opt_state), metrics

  def _global(self, batch: Batch) -> Batch:
    """Host rows (the same on every process), trimmed and with their target positions, as
    global arrays split over the batch axes."""
    batch = with_target_positions(trim_padding(batch))
    return {name: multihost.global_array(np.asarray(batch[name], dtype), self.batch_sharding)
            for name, dtype in BATCH_DTYPES.items()}
