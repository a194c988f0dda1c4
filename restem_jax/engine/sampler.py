"""Continuous-batching KV-cache sampler: the host loop around `decoding`'s programs.

The device decodes a fixed number of lanes over a fixed number of prompt
slots (see `decoding`). A prompt is prefilled once into a free slot; its
keys and last-position logits are shared by all of its samples, which any
lane may decode. When a prompt's last sample ends, its slot is free: the
host collects the prompt's samples and prefills the next pending prompt
into it. The head that all prompts of a call share (a system message,
few-shot exemplars) is prefilled once per call; each prompt's prefill
computes only the rest, attending to that head's keys. Slots, lanes and
lengths are fixed for a call, so nothing recompiles as the mix of prompts
and samples changes; the prompt length is bucketed and the shared head cut
to a multiple of 8 tokens.

A sample's tokens depend only on (seed, prompt id, sample index): its key is
folded from those, and step t's draw from the key and t, never from the
slot, lane or neighbours it ran with.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from restem_jax.engine import decoding, multihost, partitioning, sampling_layout
from restem_jax.engine.config import ConfigError, ModelConfig
from restem_jax.engine.decoding import Shape
from restem_jax.engine.layout import buckets, pick, round_up, shared_head
from restem_jax.engine import params as P
from restem_jax.engine.model import KV, Decoder, causal_mask, per_layer, positions_of, unrolled
from restem_jax.engine.sampling import SamplingConfig, Stopping

__all__ = ["CallStats", "Sampler", "SamplingConfig", "Samples", "Stopping", "buckets", "pick"]

# Prompt tokens one prefill computes per data-parallel group, at most: thousands of tokens
# keep a chip's matmuls busy, while the attention scores (rows x length^2) of a quarter of
# a greedy call's slots of 1,536-token prompts would outgrow the KV cache itself.
MAX_PREFILL_TOKENS = 16384
# Decode steps per device call (see `decoding.decode`).
DECODE_CHUNK = 8


class CallStats(NamedTuple):
  """The last call's decode steps, each over `lanes` lanes and `slots` prompt slots."""
  steps: int
  lanes: int
  slots: int


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


class Sampler:
  """Samples continuations of prompts from a `Decoder`, sharded over a mesh.

  A call decodes up to max_batch x lanes rows (`rows`, rounded up to the
  data-parallel size), whatever the samples per prompt, over enough prompt
  slots to keep them busy (`slots_for`).
  refill: how many slots must be free, while prompts wait, before the host
  stops the decode loop to prefill that many prompts at once (default a
  quarter of the slots, at most MAX_PREFILL_TOKENS prompt tokens per data-parallel
  group: batched prefill costs less per prompt).
  share_head: prefill the prompts' common head once per call (off: each
  prompt whole, as a reference).
  decode_chunk: decode steps per device call (`decoding.decode`); the host
  checks for finished prompts between calls. Longer chunks launch less often
  and leave lanes idle longer once their prompts' samples run out.
  """

  def __init__(self, model_config: ModelConfig, mesh: Mesh,
               rules: partitioning.Rules = partitioning.DEFAULT_RULES, *, pad_id: int = 0,
               max_prompt_len: int = 512, min_prompt_bucket: int = 32, max_batch: int = 16,
               lanes: int = 4, refill: int | None = None, share_head: bool = True,
               decode_chunk: int = DECODE_CHUNK):
    self.model = Decoder(model_config)
    self.mesh, self.rules = mesh, rules
    self.pad_id = pad_id
    self.max_prompt_len = max_prompt_len
    self.prompt_buckets = buckets(min(min_prompt_bucket, max_prompt_len), max_prompt_len)
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    self.batch_buckets = buckets(data_parallel, max(max_batch, data_parallel))
    self.max_batch = self.batch_buckets[-1]
    self.data_parallel, self.lanes, self._refill = data_parallel, lanes, refill
    self.rows = round_up(max_batch * lanes, data_parallel)
    self.share_head = share_head
    if decode_chunk < 1:
      raise ConfigError(f"Sampler decode_chunk={decode_chunk} must be at least 1.")
    self.decode_chunk = decode_chunk
    stacked = P.param_shardings(self.model, mesh, rules)
    self.param_shardings = dict(stacked, layers=self._layer_shardings(stacked["layers"]))
    self.abstract_params = partitioning.abstract_on(
        jax.eval_shape(per_layer, sampling_layout.abstract_decoding_params(model_config)),
        self.param_shardings)
    names = P.param_names(self.model)
    self._place = jax.jit(
        lambda p: per_layer(sampling_layout.for_decoding(model_config, names, p)),
        out_shardings=self.param_shardings)
    self._jitted: dict[tuple, Any] = {}
    self.compilations: collections.Counter[str] = collections.Counter()
    self.last_call: CallStats | None = None

  def slots_for(self, config: SamplingConfig, length: int) -> int:
    """The most prompt slots of a call of `length`-token prompts: the prompts whose samples
    fill the rows, and as many again prefilled ahead, so a lane that finishes finds the
    next prompt's samples waiting (SmolLM2's E-step, 64 lanes over 32 slots refilled 8 at
    a time, kept every lane busy to the call's last prompts); of long prompts, whose keys
    fill the memory, no more ahead than one prefill computes."""
    prompts = -(-self.rows // config.num_samples)
    return round_up(prompts + min(prompts, self._prefill_rows(length)), self.data_parallel)

  def refill_for(self, slots: int, length: int) -> int:
    """Prompts of `length` tokens prefilled together: one compiled shape, a multiple of the
    data-parallel size; by default a quarter of the slots, at most MAX_PREFILL_TOKENS
    tokens a group."""
    refill = self._refill
    if refill is None:
      refill = min(slots // 4, self._prefill_rows(length))
    return round_up(min(max(refill, 1), slots), self.data_parallel)

  def _prefill_rows(self, length: int) -> int:
    """The most `length`-token prompts one prefill computes (MAX_PREFILL_TOKENS a group)."""
    return max(MAX_PREFILL_TOKENS // length, 1) * self.data_parallel

  def shape_for(self, config: SamplingConfig, stopping: Stopping, layout: Sequence[Sequence[int]],
                shared: int = 0) -> Shape:
    """A call's shape: the layout's prompt length (a shared head of `shared` tokens, then
    a bucket for the rest), and slots and lanes for its size (bucketed)."""
    rest = pick(max(map(len, layout)) - shared, self.prompt_buckets)
    length = shared + min(rest, self.max_prompt_len - shared)
    most = self.slots_for(config, length)
    slots = pick(min(len(layout), most), buckets(self.data_parallel, most))
    lanes = pick(min(len(layout) * config.num_samples, self.rows),
                 buckets(self.data_parallel, self.rows))
    return Shape(config, stopping, length, slots, lanes, self.data_parallel)

  @property
  def num_compilations(self) -> int:
    return sum(self.compilations.values())

  def sample(self, params: Any, prompts: Sequence[Sequence[int]], config: SamplingConfig,
             seed: int = 0, prompt_ids: Sequence[int] | None = None,
             stopping: Stopping = Stopping(),
             progress: Callable[[int], None] | None = None) -> Samples:
    """Samples `config.num_samples` continuations of every prompt.

    A prompt's randomness depends only on (seed, its prompt id, sample index),
    never on which other prompts run beside it; prompt_ids default to the
    prompts' positions in this call. `progress(1)` is told as each prompt finishes.
    """
    n, g = config.num_samples, config.max_new_tokens
    out = Samples(np.full((len(prompts), n, g), self.pad_id, np.int32),
                  np.zeros((len(prompts), n), np.int32), np.zeros((len(prompts), n, g), np.float32))
    for i, row in self.stream(params, prompts, config, seed, prompt_ids, stopping):
      for host, field in zip(out, row):
        host[i] = field
      if progress is not None:
        progress(1)
    return out

  def stream(self, params: Any, prompts: Sequence[Sequence[int]], config: SamplingConfig,
             seed: int = 0, prompt_ids: Sequence[int] | None = None,
             stopping: Stopping = Stopping(), layout: Sequence[Sequence[int]] | None = None
             ) -> Iterator[tuple[int, Samples]]:
    """Yields (i, prompt i's samples as a one-prompt `Samples` row) as each prompt finishes.

    Prompts enter in order; one that finishes early comes out early, so a
    consumer can score finished prompts while the rest still sample.
    `layout` (default: `prompts`) is the prompt set whose prompt bucket, slot
    count and shared head the call's programs take: a resumed E-step passes
    all of its problems, so its remaining prompts run the same programs as
    in the uninterrupted run and their log-probs match to the bit.
    """
    prompt_ids = list(range(len(prompts)) if prompt_ids is None else prompt_ids)
    if len(prompt_ids) != len(prompts):
      raise ValueError(f"got {len(prompts)} prompts but {len(prompt_ids)} prompt_ids.")
    self._check(prompts)
    if not prompts:
      return
    layout = prompts if layout is None else layout
    shared = shared_head(layout) if self.share_head else 0
    shape = self.shape_for(config, stopping, layout, shared)
    if any(len(p) > shape.length or list(p[:shared]) != list(layout[0][:shared])
           for p in prompts):
      raise ValueError("every prompt must fit the layout's prompt bucket and start with its "
                       "shared head: pass a layout that includes the prompts.")
    params = self.place(params)
    head = self._head(params, prompts[0][:shared]) if shared else None
    base = jax.random.PRNGKey(seed)
    keys = np.asarray(jax.vmap(lambda i: jax.random.fold_in(base, i))(
        jnp.asarray(prompt_ids, jnp.uint32)))
    state = self._function("empty", shape)()
    slots, refill = shape.slots, self.refill_for(shape.slots, shape.length)
    # Free slots are taken round-robin over the groups, which then hold equal shares.
    per_group = slots // shape.groups
    by_group = sorted(range(slots), key=lambda b: (b % per_group, b // per_group))
    owners: list[int | None] = [None] * slots
    pending = collections.deque(range(len(prompts)))
    free = np.ones(slots, bool)
    replicated = partitioning.replicated(self.mesh)
    scalar = lambda x: multihost.global_array(np.asarray(x), replicated)
    while True:
      finished = [b for b in range(slots) if free[b] and owners[b] is not None]
      if finished:
        which = np.zeros(slots, np.int32)  # One compiled shape: extra rows are ignored.
        which[:len(finished)] = finished
        out = Samples(*(np.asarray(x) for x in self._function("collect", shape)(
            state, multihost.global_array(which, replicated))))
        for row, slot in enumerate(finished):
          yield owners[slot], Samples(*(x[row] for x in out))
          owners[slot] = None
      empty = [b for b in by_group if owners[b] is None]
      while pending and empty:
        take = [pending.popleft() for _ in range(min(len(pending), len(empty), refill))]
        into, empty = empty[:len(take)], empty[len(take):]
        state = self._prefill(params, state, shape, [prompts[i][shared:] for i in take],
                              keys[take], take, into, head, refill)
        for slot, i in zip(into, take):
          owners[slot] = i
      if all(o is None for o in owners):
        self.last_call = CallStats(int(np.asarray(state["steps"])), shape.lanes, slots)
        return
      need = scalar(np.int32(min(refill, len(pending)) if pending else slots))
      more, going = scalar(bool(pending)), True
      while going:
        state, free, going = self._function("decode", shape)(params, state, need, more)
        going = bool(np.asarray(going))
      free = np.asarray(free)

  def _check(self, prompts: Sequence[Sequence[int]]) -> None:
    for i, prompt in enumerate(prompts):
      if not 0 < len(prompt) <= self.max_prompt_len:
        raise ConfigError(
            f"prompt {i} has {len(prompt)} tokens but the sampler's max_prompt_len is "
            f"{self.max_prompt_len}: raise Sampler max_prompt_len (the KV cache size) "
            "or shorten the prompt (fewer few-shot exemplars)." if prompt else
            f"prompt {i} is empty; every prompt needs at least one token (e.g. BOS).")

  def place(self, params: Any) -> Any:
    """Parameters as the sampler reads them (`sampling_layout`): the compute dtype, each
    layer's weights an array of its own (`per_layer`), on the sampling mesh. A stacked tree
    from any layout is resharded and cast in one program; the copy lives as long as the
    caller holds it (a call's, in `stream`)."""
    if isinstance(params["layers"], tuple):
      return jax.device_put(params, self.param_shardings)
    return self._place(params)

  def _head(self, params, ids: Sequence[int]) -> tuple[KV, ...]:
    """Keys of the prompts' shared head, per layer [1, kv_heads, len(ids), head_dim]."""
    key = ("head", len(ids))
    if key not in self._jitted:
      def keys_of(params, tokens):
        self.compilations["head"] += 1
        valid = jnp.ones(tokens.shape, bool)
        with partitioning.sharding_context(self.mesh, self.rules):
          _, kv = unrolled(self.model.cfg, params, tokens[:, None], positions_of(valid)[:, None],
                           causal_mask(valid[:, None]), last_only=True)
        return tuple(KV(layer.k[:, 0], layer.v[:, 0]) for layer in kv)
      self._jitted[key] = jax.jit(keys_of, out_shardings=partitioning.replicated(self.mesh))
    tokens = multihost.global_array(np.asarray([ids], np.int32), partitioning.replicated(self.mesh))
    return self._jitted[key](params, tokens)

  def _prefill(self, params, state, shape: Shape, prompts, keys, order, into, head: KV | None,
               rows: int):
    """Prefills `prompts` (each without the shared head), left-padded to the rest's length."""
    length = shape.length - (0 if head is None else head[0].k.shape[-2])
    tokens = np.full((rows, length), self.pad_id, np.int32)
    valid = np.zeros((rows, length), bool)
    for row, prompt in enumerate(prompts):
      tokens[row, length - len(prompt):] = prompt
      valid[row, length - len(prompt):] = True
    valid[len(prompts):, -1] = True  # Filler rows: one token, written nowhere.

    def fill(values, dtype, filler=0):  # The prompts' values, then the filler rows'.
      values = np.asarray(values, dtype)
      out = np.full((rows,) + values.shape[1:], filler, dtype)
      out[:len(values)] = values
      return out

    batch = partitioning.batch_sharding(self.mesh, self.rules)
    replicated = partitioning.replicated(self.mesh)
    return self._function("prefill", shape)(
        params, state, *(multihost.global_array(x, batch) for x in (tokens, valid)),
        multihost.global_array(fill(keys, np.uint32), batch),
        *(multihost.global_array(x, replicated)
          for x in (fill(order, np.int32), fill(into, np.int32, shape.slots))), head)

  # --------------------------------------------------------------------------- device programs

  def _function(self, name: str, shape: Shape):
    key = (name, shape)
    if key not in self._jitted:
      self._jitted[key] = self._jit(name, shape)
    return self._jitted[key]

  def _jit(self, name: str, shape: Shape):
    shapes = jax.eval_shape(lambda: decoding.empty(self.model.cfg, shape, self.pad_id))
    state = self._state_shardings(shapes)
    replicated = partitioning.replicated(self.mesh)

    def traced(fn):
      def run(*args):
        self.compilations[name] += 1
        with partitioning.sharding_context(self.mesh, self.rules):
          return fn(*args)
      return run

    if name == "empty":
      return jax.jit(traced(lambda: decoding.empty(self.model.cfg, shape, self.pad_id)),
                     out_shardings=state)
    if name == "prefill":
      return jax.jit(traced(lambda *a: decoding.prefill(self.model.cfg, shape, *a)),
                     donate_argnums=1, out_shardings=state)
    if name == "decode":
      chunk = self.decode_chunk
      return jax.jit(traced(lambda p, s, *a: decoding.decode(self.model.cfg, shape, p, s, chunk,
                                                             *a)),
                     donate_argnums=1, out_shardings=(state, replicated, replicated))
    assert name == "collect"
    return jax.jit(traced(lambda *a: decoding.collect(self.pad_id, *a)),
                   out_shardings=replicated)

  def _layer_shardings(self, stacked: Any) -> tuple:
    """`per_layer`'s layer shardings: each layer as stacked, less the layer axis."""
    one = jax.tree.map(
        lambda s: jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(*s.spec[1:])),
        stacked)
    return (one,) * self.model.cfg.num_layers

  def _state_shardings(self, shapes: dict) -> dict:
    spec = lambda name: jax.sharding.PartitionSpec(*decoding.AXES[name])
    names = {name: jax.tree.map(lambda _, name=name: spec(name), value)
             for name, value in shapes.items()}
    return partitioning.tree_shardings(shapes, names, self.mesh, self.rules)

  def compile_ahead(self, config: SamplingConfig, stopping: Stopping = Stopping(), *,
                    parts: bool = False) -> dict[str, Any]:
    """Compiles the largest bucket from shapes alone, for any mesh (e.g. a TPU topology).

    Returns {"prefill": `refill` prompts, "decode": a chunk of decode steps};
    with `parts`, "decode_step" (one step) instead of "decode": compiled cost
    analysis counts a loop body once, so per-token costs are read from one step.
    """
    slots = self.slots_for(config, self.prompt_buckets[-1])
    shape = Shape(config, stopping, self.prompt_buckets[-1], slots, self.rows,
                  self.data_parallel)
    rows = self.refill_for(slots, shape.length)
    batch = partitioning.batch_sharding(self.mesh, self.rules)
    replicated = partitioning.replicated(self.mesh)
    spec = lambda size, dtype, sharding=batch: jax.ShapeDtypeStruct(size, dtype,
                                                                    sharding=sharding)
    params = self.abstract_params
    shapes = jax.eval_shape(lambda: decoding.empty(self.model.cfg, shape, self.pad_id))
    state = partitioning.abstract_on(shapes, self._state_shardings(shapes))
    out = {"prefill": self._function("prefill", shape).lower(
        params, state, spec((rows, shape.length), jnp.int32),
        spec((rows, shape.length), jnp.bool_), spec((rows, 2), jnp.uint32),
        spec((rows,), jnp.int32, replicated), spec((rows,), jnp.int32, replicated),
        None).compile()}
    if not parts:
      out["decode"] = self._function("decode", shape).lower(
          params, state, spec((), jnp.int32, replicated),
          spec((), jnp.bool_, replicated)).compile()
      return out

    def step(*args):
      with partitioning.sharding_context(self.mesh, self.rules):
        return decoding.step(self.model.cfg, shape, *args)
    # Donated, as the decode loop carries the state: the caches update in place.
    out["decode_step"] = jax.jit(step, donate_argnums=1,
                                 out_shardings=self._state_shardings(shapes)).lower(
        params, state).compile()
    return out
