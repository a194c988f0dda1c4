"""The sampler's device state and the pure functions that advance it.

A call holds S prompt slots and L decode lanes. A slot holds one prompt's
keys, its samples' first tokens and their outputs; a lane decodes one sample
of any resident prompt. A lane whose sample ends (EOS, a stop sequence or
its length cap) takes the next pending sample of the earliest resident
prompt in the same step, so no lane waits for its prompt's slowest sample:
on SmolLM2's word-arithmetic E-step, 50 of 64 prompts had a sample that
ran to the cap while the mean sample stopped at 21 of 32 tokens. A slot is
free when its prompt's samples have all ended.

Slots and lanes are split into `groups` (the data-parallel shards); a lane
takes samples only from its own group's slots, so reading a prompt's keys
never crosses devices.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from restem_jax.engine.config import ModelConfig
from restem_jax.engine.model import (KV, causal_mask, partial_attention, positions_of,
                                     unrolled)
from restem_jax.engine.sampling import SamplingConfig, Stopping, draw


class Shape(NamedTuple):
  """What a call's programs are compiled for."""
  config: SamplingConfig
  stopping: Stopping
  length: int  # Prompt bucket, shared head included.
  slots: int
  lanes: int
  groups: int


# Logical axes of the state (see `empty`); prefix and cache hold one KV per layer, keys
# [.., length, head_dim] and values [.., head_dim, length].
AXES = dict(
    prefix=("act_batch", "act_kv_heads", None, None),
    cache=("act_batch", "act_samples", "act_kv_heads", None, None),
    prefix_mask=("act_batch", None), prompt_len=("act_batch",),
    first_token=("act_batch", None), first_logprob=("act_batch", None),
    prompt_key=("act_batch", None), next_sample=("act_batch",), order=("act_batch",),
    out=("act_batch", None, None), out_logprobs=("act_batch", None, None),
    lengths=("act_batch", None),
    slot=("act_batch",), sample=("act_batch",), t=("act_batch",), token=("act_batch",),
    logprob=("act_batch",), active=("act_batch",), steps=())

_EMPTY_ORDER = jnp.iinfo(jnp.int32).max  # An empty slot's place in the queue: last.


def empty(cfg: ModelConfig, shape: Shape, pad_id: int) -> dict:
  """The state of a call with every slot free and every lane idle."""
  s, m = shape.slots, shape.lanes
  n, g = shape.config.num_samples, shape.config.max_new_tokens
  dtype = jnp.dtype(cfg.dtype)
  zeros = lambda size, dt=jnp.int32: jnp.zeros(size, dt)
  k, d, p = cfg.num_kv_heads, cfg.head_dim, shape.length
  # Values with head_dim before length (see `model._write`).
  return dict(
      prefix=tuple(KV(zeros((s, k, p, d), dtype), zeros((s, k, d, p), dtype))
                   for _ in range(cfg.num_layers)),
      cache=tuple(KV(zeros((m, 1, k, g, d), dtype), zeros((m, 1, k, d, g), dtype))
                  for _ in range(cfg.num_layers)),
      prefix_mask=zeros((s, shape.length), bool), prompt_len=zeros((s,)),
      first_token=zeros((s, n)), first_logprob=zeros((s, n), jnp.float32),
      prompt_key=zeros((s, 2), jnp.uint32),
      next_sample=jnp.full((s,), n, jnp.int32),  # n: nothing left to start.
      order=jnp.full((s,), _EMPTY_ORDER, jnp.int32),
      out=jnp.full((s, n, g), pad_id, jnp.int32), out_logprobs=zeros((s, n, g), jnp.float32),
      lengths=zeros((s, n)),
      slot=zeros((m,)), sample=zeros((m,)), t=zeros((m,)), token=zeros((m,)),
      logprob=zeros((m,), jnp.float32), active=zeros((m,), bool), steps=zeros(()))


def _grouped(groups: int, fn: Callable, *args: Any) -> Any:
  """fn applied to each group: every argument's leading axis splits into `groups` blocks."""
  split = lambda a: a.reshape((groups, a.shape[0] // groups) + a.shape[1:])
  out = jax.vmap(fn)(*jax.tree.map(split, args))
  return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), out)


def _per_lane(shape: Shape, per_slot: jax.Array, slot: jax.Array) -> jax.Array:
  """Each lane's row of a per-slot array."""
  return _grouped(shape.groups, lambda a, i: a[i], per_slot, slot)


class Seats(NamedTuple):
  """Where the lanes sit among their group's slots this step (one index pair for all layers).

  Lane l decodes sample `sample[l]` of slot `slot[l]`'s prompt; each slot has
  a seat per sample. `lane` [S, samples] is the lane at each seat (the
  group's lane count where none: a zero query); `seat` [L] each lane's seat
  in a slot-major flattening (an idle lane reads an arbitrary seat).
  """
  lane: jax.Array
  seat: jax.Array
  groups: int

  @classmethod
  def of(cls, shape: Shape, slot: jax.Array, sample: jax.Array) -> "Seats":
    """Seats of lanes (slot, sample); a lane with sample >= samples sits nowhere."""
    n = shape.config.num_samples
    per_group = shape.slots // shape.groups
    def one(slot, sample):
      lanes = slot.shape[0]
      lane = jnp.full((per_group, n), lanes, jnp.int32).at[slot, sample].set(
          jnp.arange(lanes, dtype=jnp.int32), mode="drop")
      return lane, slot * n + jnp.minimum(sample, n - 1)
    return cls(*_grouped(shape.groups, one, slot, sample), shape.groups)


class SlotPrefix(NamedTuple):
  """One layer's prompt keys held per slot (keys [S, K, P, D], values [S, K, D, P]), read
  by the lanes (see `model._attend_decoding`).

  The lanes' queries are gathered into their seats, so each slot's keys are
  read once per step, in one matmul for all of its samples (shared-prefix
  attention, as in Hydragen): copying a prompt's keys out for each of its
  lanes made SmolLM2's E-step decode 10-15% slower on a 2-core CPU. Attention
  over the prompt finishes in the seats (output and log-sum-exp), so only a
  query goes in and an output comes out per lane and layer; the lane's own
  keys are attended in place and the two merged.
  """
  kv: KV
  mask: jax.Array
  seats: Seats

  def attend(self, q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """q [L, 1, 1, K, G, D] -> (output [L, 1, 1, K, G, D], log-sum-exp [L, 1, 1, K, G, 1])."""
    def one(q, lane, seat, k, v, mask):
      queries = jnp.concatenate([q, jnp.zeros_like(q[:1])])[lane]  # [S, n, K, G, D]
      s = jnp.einsum("snkgd,skpd->snkgp", queries, k, preferred_element_type=jnp.float32)
      s = jnp.where(mask[:, None, None, None, :], s, jnp.finfo(jnp.float32).min)
      out, lse = partial_attention(s[..., None, :], v, "snkgtp,skdp->sntkgd",
                                   q.dtype)  # [S, n, 1, K, G, D|1]
      flat = lambda a: a.reshape((-1,) + a.shape[2:])
      return flat(out)[seat], flat(lse)[seat]
    out, lse = _grouped(self.seats.groups, one, q[:, 0, 0], self.seats.lane, self.seats.seat,
                        self.kv.k, self.kv.v, self.mask)
    return out[:, None], lse[:, None]


def _pending(shape: Shape, next_sample: jax.Array) -> jax.Array:
  return jnp.maximum(shape.config.num_samples - next_sample, 0)


def _assign(shape: Shape, next_sample, order, idle) -> tuple[jax.Array, ...]:
  """One group: idle lanes take the pending samples of the earliest prompts, in order.

  Returns each lane's (whether it starts, slot, sample) and the slots' next samples.
  """
  pending = _pending(shape, next_sample)
  queue = jnp.argsort(order)
  through = jnp.cumsum(pending[queue])  # Samples pending up to each queued slot.
  rank = jnp.cumsum(idle) - 1
  place = jnp.searchsorted(through, rank, side="right")
  starts = idle & (place < queue.shape[0])
  place = jnp.minimum(place, queue.shape[0] - 1)
  slot = queue[place]
  sample = next_sample[slot] + rank - (through[place] - pending[slot])
  taken = jnp.zeros_like(next_sample).at[slot].add(starts.astype(next_sample.dtype))
  return starts, slot, sample, next_sample + taken


def start(shape: Shape, s: dict, step_logits: jax.Array | None = None) -> dict:
  """Starts pending samples on idle lanes with their first tokens (drawn at prefill);
  with `step_logits` (a decode step), draws the next token of every lane that goes on."""
  starts, slot, sample, next_sample = _grouped(
      shape.groups, lambda *a: _assign(shape, *a), s["next_sample"], s["order"], ~s["active"])
  slot, sample = jnp.where(starts, slot, s["slot"]), jnp.where(starts, sample, s["sample"])
  first = lambda a: _grouped(shape.groups, lambda a, i, j: a[i, j], a, slot,
                             jnp.minimum(sample, shape.config.num_samples - 1))
  token = jnp.where(starts, first(s["first_token"]), s["token"])
  logprob = jnp.where(starts, first(s["first_logprob"]), s["logprob"])
  t = jnp.where(starts, 0, s["t"])
  if step_logits is not None:
    keys = jax.vmap(jax.random.fold_in)(_per_lane(shape, s["prompt_key"], slot),
                                        sample.astype(jnp.uint32))
    drawn, drawn_logprob = draw(step_logits, keys, s["t"] + 1, shape.config)
    token = jnp.where(s["active"], drawn, token)
    logprob = jnp.where(s["active"], drawn_logprob, logprob)
    t = jnp.where(s["active"], s["t"] + 1, t)
  return dict(s, slot=slot, sample=sample, t=t, next_sample=next_sample, token=token,
              logprob=logprob, active=s["active"] | starts)


def _first_draws(config: SamplingConfig, logits: jax.Array, keys: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
  """Every sample's first token and log-prob from its prompt's last logits [R, V]."""
  n = config.num_samples
  samples = jnp.arange(n, dtype=jnp.uint32)
  sample_keys = jax.vmap(lambda key: jax.vmap(lambda j: jax.random.fold_in(key, j))(samples))(keys)
  return draw(jnp.broadcast_to(logits[:, None], (logits.shape[0], n, logits.shape[-1])),
              sample_keys, 0, config)


def prefill(cfg: ModelConfig, shape: Shape, params, s: dict, tokens, valid, keys, order, into,
            head: tuple[KV, ...] | None) -> dict:
  """Prefills prompts into slots `into` (out-of-range slots are dropped) and starts lanes.

  tokens/valid [R, T] are each prompt without the shared `head` (each layer's
  keys [1, K, H, D]), left-padded: they attend to the head's keys, and a slot
  holds the head's keys, then theirs.
  """
  rows = tokens.shape[0]
  shared = 0 if head is None else head[0].k.shape[-2]
  wide = lambda a: jnp.broadcast_to(a, (rows,) + a.shape[1:])
  context = None if head is None else tuple(KV(wide(kv.k), wide(kv.v)) for kv in head)
  logits, rest = unrolled(
      cfg, params, tokens[:, None], (shared + positions_of(valid))[:, None],
      causal_mask(valid[:, None]), context,
      None if head is None else jnp.ones((rows, shared), bool), last_only=True)

  def slot_keys(i: int, field: int) -> jax.Array:  # Layer i's keys (0) or values (1) per row.
    own = rest[i][field][:, 0]
    both = own if head is None else jnp.concatenate(
        [context[i][field].astype(own.dtype), own], axis=-2)
    return jnp.swapaxes(both, -1, -2) if field == 1 else both

  put = lambda old, new: old.at[into].set(new.astype(old.dtype), mode="drop")
  full = jnp.concatenate([jnp.ones((rows, shared), bool), valid], axis=-1)
  first_token, first_logprob = _first_draws(shape.config, logits[:, 0, 0], keys)
  s = dict(s, prefix=tuple(KV(put(old.k, slot_keys(i, 0)), put(old.v, slot_keys(i, 1)))
                           for i, old in enumerate(s["prefix"])),
           prefix_mask=put(s["prefix_mask"], full), prompt_len=put(s["prompt_len"], full.sum(-1)),
           first_token=put(s["first_token"], first_token),
           first_logprob=put(s["first_logprob"], first_logprob),
           prompt_key=put(s["prompt_key"], keys), order=put(s["order"], order),
           next_sample=put(s["next_sample"], jnp.zeros(into.shape, jnp.int32)))
  return start(shape, s)


def _ends_with(row: jax.Array, t: jax.Array, stop: tuple[int, ...]) -> jax.Array:
  """Whether row[:t+1] ends with the token sequence `stop` (row [G], t a scalar)."""
  n = len(stop)
  window = jax.lax.dynamic_slice_in_dim(row, jnp.maximum(t - n + 1, 0), n)
  return (t + 1 >= n) & jnp.all(window == jnp.asarray(stop, row.dtype))


def _stop_lengths(shape: Shape, s: dict, out: jax.Array) -> jax.Array:
  """Per lane: the length of the EOS (1) or stop sequence its current token ends, else 0."""
  n, g = shape.config.num_samples, shape.config.max_new_tokens
  stop_len = jnp.zeros(s["token"].shape, jnp.int32)
  for eos in shape.stopping.eos_ids:
    stop_len = jnp.where(s["token"] == eos, 1, stop_len)
  sequences = [seq for seq in shape.stopping.sequences if len(seq) <= g]  # Longer never fit.
  if sequences:
    history = _grouped(shape.groups, lambda o, slot, sample: o[slot, sample], out, s["slot"],
                       jnp.minimum(s["sample"], n - 1))  # [L, G]
    for stop in sequences:
      ends = jax.vmap(lambda row, t, stop=stop: _ends_with(row, t, stop))(history, s["t"])
      stop_len = jnp.where((stop_len == 0) & ends, len(stop), stop_len)
  return stop_len


def step(cfg: ModelConfig, shape: Shape, params, s: dict) -> dict:
  """Records every lane's current token, ends finished samples, and draws the next tokens."""
  n, g = shape.config.num_samples, shape.config.max_new_tokens
  at = jnp.where(s["active"], s["sample"], n)  # Idle lanes write out of range: dropped.
  record = lambda o, slot, i, t, x: o.at[slot, i, t].set(x, mode="drop")
  out = _grouped(shape.groups, record, s["out"], s["slot"], at, s["t"], s["token"])
  out_logprobs = _grouped(shape.groups, record, s["out_logprobs"], s["slot"], at, s["t"],
                          s["logprob"])
  stop_len = _stop_lengths(shape, s, out)
  finished = s["active"] & ((stop_len > 0) | (s["t"] + 1 >= g))
  length = jnp.where(stop_len > 0, s["t"] + 1 - stop_len, g)
  lengths = _grouped(shape.groups, lambda o, slot, i, x: o.at[slot, i].set(x, mode="drop"),
                     s["lengths"], s["slot"], jnp.where(finished, s["sample"], n), length)
  seats = Seats.of(shape, s["slot"], at)
  prefix = tuple(SlotPrefix(kv, s["prefix_mask"], seats) for kv in s["prefix"])
  positions = _per_lane(shape, s["prompt_len"], s["slot"]) + s["t"]
  step_logits, cache = unrolled(
      cfg, params, s["token"][:, None, None], positions[:, None, None],
      (jnp.arange(g) <= s["t"][:, None])[:, None, None], prefix, None, s["cache"],
      s["t"][:, None])
  s = dict(s, out=out, out_logprobs=out_logprobs, lengths=lengths, cache=cache,
           active=s["active"] & ~finished, steps=s["steps"] + 1)
  return start(shape, s, step_logits[:, 0, 0])


def free(shape: Shape, s: dict) -> jax.Array:
  """Per slot: whether its prompt's samples have all ended (an empty slot is free too)."""
  def of_group(next_sample, slot, active):
    busy = jnp.zeros(next_sample.shape, jnp.int32).at[slot].add(active.astype(jnp.int32))
    return (busy == 0) & (next_sample >= shape.config.num_samples)
  return _grouped(shape.groups, of_group, s["next_sample"], s["slot"], s["active"])


def decode(cfg: ModelConfig, shape: Shape, params, s: dict, steps: int, need, more
           ) -> tuple[dict, jax.Array, jax.Array]:
  """`steps` decode steps, a fixed trip count, then whether the host should run more.

  A loop whose trip count depends on the data makes a GPU copy its predicate
  to the host and wait at every step; a known count runs the steps back to
  back, and the host decides between chunks. Lanes with nothing left to
  decode idle to the chunk's end. Returns the state, which slots are free,
  and whether to go on: some lane is active, fewer than `need` slots are free,
  and (with `more` prompts waiting) no lane idles for want of samples while
  a slot is free.
  """
  s = jax.lax.fori_loop(0, steps, lambda _, s: step(cfg, shape, params, s), s)
  free_slots = free(shape, s)
  count = jnp.sum(free_slots)
  starving = more & ~jnp.all(s["active"]) & (jnp.sum(_pending(shape, s["next_sample"])) == 0)
  going = jnp.any(s["active"]) & (count < need) & ~(starving & (count > 0))
  return s, free_slots, going


def collect(pad_id: int, s: dict, slots: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The finished samples of `slots`, padded after their lengths."""
  lengths = s["lengths"][slots]
  kept = jnp.arange(s["out"].shape[-1]) < lengths[..., None]
  return (jnp.where(kept, s["out"][slots], pad_id), lengths,
          jnp.where(kept, s["out_logprobs"][slots], 0.0))
