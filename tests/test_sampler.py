"""The KV-cache sampler: exactness, stopping, sampling filters, randomness, buckets."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from restem_jax.engine import partitioning
from restem_jax.engine.config import ConfigError
from restem_jax.engine.model import Decoder, forward
from restem_jax.engine.sampler import MAX_PREFILL_TOKENS, Sampler, SamplingConfig, Stopping
from tests.utils import TINY, random_prompts, tiny_params

GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=10)


def make_sampler(**kwargs):
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  kwargs.setdefault("max_prompt_len", 32)
  kwargs.setdefault("max_batch", 8)
  return Sampler(TINY, mesh, **kwargs)


class SamplerTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.params = tiny_params()
    cls.prompts = random_prompts(5, TINY.vocab_size, seed=1)

  def test_prefill_and_decode_update_the_state_in_place(self):
    # The state (the KV cache above all) is donated to both programs: one that copied it
    # would hold the cache twice.
    programs = make_sampler().compile_ahead(SamplingConfig(num_samples=2, max_new_tokens=8))
    for name, program in programs.items():
      memory = program.memory_analysis()
      self.assertGreater(memory.alias_size_in_bytes, 0.99 * memory.output_size_in_bytes, name)

  def test_greedy_equals_argmax_of_full_forward(self):
    out = make_sampler().sample(self.params, self.prompts, GREEDY)
    model = Decoder(TINY)
    width = max(map(len, self.prompts)) + GREEDY.max_new_tokens
    for prompt, tokens, logprobs in zip(self.prompts, out.tokens[:, 0], out.logprobs[:, 0]):
      # Right padding leaves causal logits unchanged and keeps one compiled shape.
      seq = np.zeros((1, width), np.int32)
      seq[0, :len(prompt)] = prompt
      for i in range(len(prompt), len(prompt) + GREEDY.max_new_tokens):
        seq[0, i] = int(jnp.argmax(forward(model, self.params, jnp.asarray(seq))[0, i - 1]))
      generated = seq[0, len(prompt):len(prompt) + GREEDY.max_new_tokens]
      self.assertEqual(tokens.tolist(), generated.tolist())
      full = jax.nn.log_softmax(forward(model, self.params, jnp.asarray(seq))[0])
      expected = [full[len(prompt) - 1 + i, t] for i, t in enumerate(generated)]
      np.testing.assert_allclose(logprobs, expected, atol=1e-4)
    # The greedy continuations differ between prompts: the model does not degenerate.
    self.assertGreater(len({tuple(t) for t in out.tokens[:, 0].tolist()}), 1)

  def test_stops_on_every_eos_id_and_stop_sequences(self):
    sampler = make_sampler()
    free = sampler.sample(self.params, self.prompts[:1], GREEDY).tokens[0, 0].tolist()
    for eos_ids in ((free[4],), (free[6], free[4]), (free[4], free[6])):
      out = sampler.sample(self.params, self.prompts[:1], GREEDY, stopping=Stopping.of(eos_ids))
      self.assertEqual(out.lengths[0, 0], min(free.index(e) for e in eos_ids), eos_ids)
    stop = tuple(free[5:7])
    out = sampler.sample(self.params, self.prompts[:1], GREEDY,
                         stopping=Stopping.of(sequences=[stop]))
    first = next(i for i in range(len(free) - 1) if tuple(free[i:i + 2]) == stop)
    self.assertEqual(out.lengths[0, 0], first)
    self.assertEqual(out.tokens[0, 0, :first].tolist(), free[:first])
    self.assertTrue(np.all(out.tokens[0, 0, first:] == 0))
    self.assertTrue(np.all(out.logprobs[0, 0, first:] == 0))

  def test_top_k_and_top_p_restrict_the_support(self):
    sampler = make_sampler()
    prompt = self.prompts[:1]
    logits = forward(Decoder(TINY), self.params, jnp.asarray(prompt))[0, -1]
    top3 = set(np.argsort(-np.asarray(logits))[:3].tolist())
    config = SamplingConfig(num_samples=64, temperature=1.5, top_k=3, max_new_tokens=1)
    firsts = sampler.sample(self.params, prompt, config, seed=4).tokens[0, :, 0]
    self.assertTrue(set(firsts.tolist()) <= top3)
    self.assertGreater(len(set(firsts.tolist())), 1)
    nucleus = SamplingConfig(num_samples=16, temperature=1.0, top_k=0, top_p=1e-6, max_new_tokens=4)
    greedy = sampler.sample(self.params, prompt, SamplingConfig(temperature=0.0, max_new_tokens=4))
    out = sampler.sample(self.params, prompt, nucleus, seed=9)
    self.assertTrue(np.all(out.tokens[0] == greedy.tokens[0, 0]))

  def test_samples_are_independent_and_reproducible(self):
    sampler = make_sampler()
    config = SamplingConfig(num_samples=4, temperature=1.0, top_k=0, max_new_tokens=8)
    a = sampler.sample(self.params, self.prompts, config, seed=7)
    b = sampler.sample(self.params, self.prompts, config, seed=7)
    c = sampler.sample(self.params, self.prompts, config, seed=8)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    self.assertFalse(np.array_equal(a.tokens, c.tokens))
    self.assertEqual(len({tuple(s) for s in a.tokens[0].tolist()}), 4)
    # A prompt's samples do not depend on the rest of its batch.
    alone = sampler.sample(self.params, self.prompts[2:3], config, seed=7, prompt_ids=[2])
    np.testing.assert_array_equal(alone.tokens[0], a.tokens[2])

  def test_compiles_once_per_prompt_bucket_whatever_the_mix(self):
    sampler = make_sampler(max_prompt_len=64, min_prompt_bucket=16, max_batch=4)
    config = SamplingConfig(num_samples=3, temperature=1.0, max_new_tokens=5)
    eos = Stopping.of([5, 9])  # Samples end at different steps: slots free at different times.
    # 12 calls of 12 different (size, longest prompt) pairs fall in 2 prompt buckets.
    sizes = [(batch, longest) for batch in (2, 7) for longest in (17, 20, 25, 30, 33, 40)]
    for batch, longest in sizes + sizes:  # The second pass must compile nothing.
      prompts = random_prompts(batch, TINY.vocab_size, low=2, high=longest, seed=longest)
      prompts[0] = list(range(1, longest + 1))
      sampler.sample(self.params, prompts, config, stopping=eos)
      if (batch, longest) == sizes[-1]:
        first_pass = dict(sampler.compilations)
    self.assertEqual(sampler.compilations, first_pass)
    # One program of each kind per (prompt bucket 32 or 64, slot bucket 2 or 4).
    self.assertEqual(dict(sampler.compilations),
                     {"empty": 4, "prefill": 4, "decode": 4, "collect": 4})
    sampler.sample(self.params, [[1, 2]], config, stopping=eos)  # Buckets (16, 1): once more.
    self.assertEqual(sampler.compilations["decode"], 5)

  def test_slots_and_lanes_change_no_sample(self):
    # 5 prompts x 6 samples through 1 slot of 2 lanes (every sample waits its turn),
    # 2 slots of 3 lanes and 8 slots of 6: the same tokens, log-probs and lengths.
    config = SamplingConfig(num_samples=6, temperature=1.0, top_k=0, max_new_tokens=6)
    eos = Stopping.of([3, 7, 11])
    runs = [make_sampler(max_batch=b, lanes=m, refill=r).sample(
        self.params, self.prompts, config, seed=5, stopping=eos)
            for b, m, r in ((1, 2, 1), (2, 3, 1), (8, 6, 4))]
    self.assertGreater(len(set(runs[0].lengths.ravel().tolist())), 2)  # Mixed lengths.
    for run in runs[1:]:
      np.testing.assert_array_equal(run.tokens, runs[0].tokens)
      np.testing.assert_array_equal(run.lengths, runs[0].lengths)
      np.testing.assert_allclose(run.logprobs, runs[0].logprobs, atol=1e-5)

  def test_decode_chunks_change_no_sample(self):
    # A chunk runs a fixed number of steps; lanes whose samples ran out idle to its end
    # and the host refills between chunks. Tokens, lengths and log-probs are those of
    # one step per call, greedy and sampled, and each chunk length compiles once.
    eos = Stopping.of([3, 7, 11])
    for config in (GREEDY, SamplingConfig(num_samples=3, temperature=1.0, max_new_tokens=9)):
      runs, steps = [], []
      for chunk in (1, 4, 16):
        sampler = make_sampler(max_batch=2, lanes=2, refill=1, decode_chunk=chunk)
        runs.append(sampler.sample(self.params, self.prompts, config, seed=3, stopping=eos))
        steps.append(sampler.last_call.steps)
        self.assertEqual(sampler.last_call.steps % chunk, 0)
        sampler.sample(self.params, self.prompts[::-1], config, seed=4, stopping=eos)
        self.assertEqual(sampler.compilations["decode"], 1)
      self.assertGreater(len(set(runs[0].lengths.ravel().tolist())), 1)  # Mixed lengths.
      for run in runs[1:]:
        np.testing.assert_array_equal(run.tokens, runs[0].tokens)
        np.testing.assert_array_equal(run.lengths, runs[0].lengths)
        np.testing.assert_allclose(run.logprobs, runs[0].logprobs, atol=1e-6)
      self.assertLessEqual(steps[0], steps[2])  # Lanes may idle to a long chunk's end.

  def test_a_lane_takes_the_next_prompts_sample_when_its_own_ends(self):
    # 2 lanes, 2 samples per prompt: a short sample's lane goes on to a sample of the
    # next prompt at once. Lanes tied to their prompt would take, prompt after prompt,
    # as many steps as its slowest sample; here the call takes half the samples' steps
    # (both lanes always busy) plus at most the last sample's. One step per chunk: the
    # steps counted are then those the lanes needed.
    config = SamplingConfig(num_samples=2, temperature=1.0, top_k=0, max_new_tokens=8)
    sampler = make_sampler(max_batch=1, lanes=2, decode_chunk=1)
    out = sampler.sample(self.params, self.prompts, config, seed=5,
                         stopping=Stopping.of([3, 7, 11]))
    steps = np.minimum(out.lengths + 1, 8)  # A stop token takes its step; the cap is 8.
    self.assertEqual(sampler.last_call.lanes, 2)
    self.assertLess(sampler.last_call.steps, steps.max(axis=1).sum())
    self.assertBetween(sampler.last_call.steps, -(-steps.sum() // 2),
                       -(-steps.sum() // 2) + steps.max())

  def test_stream_yields_prompts_as_they_finish(self):
    sampler = make_sampler(max_batch=2, refill=1, lanes=1)  # 2 slots even when greedy.
    greedy = sampler.sample(self.params, self.prompts[:1], GREEDY)
    # Prompt 0 stops at once (its first greedy token is an EOS); the rest run 10 steps.
    stopping = Stopping.of([int(greedy.tokens[0, 0, 0])])
    prompts = [self.prompts[1], self.prompts[0]] + self.prompts[2:]
    order = [i for i, _ in sampler.stream(self.params, prompts, GREEDY, stopping=stopping)]
    self.assertEqual(sorted(order), list(range(len(prompts))))
    self.assertEqual(order[0], 1)

  def test_a_prefill_computes_at_most_max_prefill_tokens_per_group(self):
    sampler = make_sampler(max_batch=64, max_prompt_len=2048)
    self.assertEqual(sampler.refill_for(512, 32), 128)  # A quarter of the slots.
    self.assertEqual(sampler.refill_for(512, 2048), MAX_PREFILL_TOKENS // 2048)
    self.assertEqual(make_sampler(refill=100).refill_for(512, 2048), 100)  # Asked for: kept.

  def test_more_prompts_than_slots_refill_the_slots(self):
    sampler = make_sampler(max_batch=2, lanes=1)
    out = sampler.sample(self.params, self.prompts, GREEDY)
    ref = make_sampler(max_batch=8).sample(self.params, self.prompts, GREEDY)
    np.testing.assert_array_equal(out.tokens, ref.tokens)

  def test_shared_head_is_prefilled_once_and_changes_no_sample(self):
    # 6 prompts share a 13-token head (the first 8 are prefilled once per call).
    head = list(range(20, 33))
    prompts = [head + p for p in random_prompts(6, TINY.vocab_size, low=1, high=9, seed=3)]
    config = SamplingConfig(num_samples=3, temperature=1.0, top_k=0, max_new_tokens=8)
    shared, whole = make_sampler(max_batch=2), make_sampler(max_batch=2, share_head=False)
    for sampling in (GREEDY, config):
      a = shared.sample(self.params, prompts, sampling, seed=2)
      b = whole.sample(self.params, prompts, sampling, seed=2)
      np.testing.assert_array_equal(a.tokens, b.tokens)
      np.testing.assert_array_equal(a.lengths, b.lengths)
      np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
    self.assertEqual(shared.compilations["head"], 1)
    self.assertNotIn("head", whole.compilations)
    compiled = dict(shared.compilations)
    shared.sample(self.params, prompts[3:] + prompts[:3], config, seed=9)  # Another order.
    self.assertEqual(dict(shared.compilations), compiled)

  def test_a_layout_makes_the_rest_of_a_call_run_the_same_programs(self):
    # A resumed E-step samples only the prompts left; with the whole call as
    # its layout it compiles nothing new and matches the whole call bit for bit.
    head = list(range(40, 50))
    prompts = [head + p for p in random_prompts(8, TINY.vocab_size, low=1, high=12, seed=5)]
    config = SamplingConfig(num_samples=3, temperature=1.0, max_new_tokens=6)
    sampler = make_sampler(max_batch=4)
    whole = sampler.sample(self.params, prompts, config, seed=1)
    compiled = dict(sampler.compilations)
    rest = dict(sampler.stream(self.params, prompts[6:], config, seed=1, prompt_ids=[6, 7],
                               layout=prompts))
    self.assertEqual(dict(sampler.compilations), compiled)
    for j, i in enumerate((6, 7)):  # The stream numbers its own prompts.
      np.testing.assert_array_equal(rest[j].tokens, whole.tokens[i])
      np.testing.assert_array_equal(rest[j].logprobs, whole.logprobs[i])
    with self.assertRaisesRegex(ValueError, "layout"):
      dict(sampler.stream(self.params, [[1] * 11], config, layout=prompts))

  def test_slots_hold_the_prompts_whose_samples_fill_the_lanes_and_as_many_ahead(self):
    # Lanes stay max_batch x lanes = 8: greedy (1 sample) takes 16 slots, 2 samples 8,
    # 6 samples 4 (two prompts fill the lanes).
    sampler = make_sampler(max_batch=2, lanes=4)
    two = SamplingConfig(num_samples=2, temperature=1.0, max_new_tokens=6)
    self.assertEqual([sampler.slots_for(c, 32) for c in (GREEDY, two, SamplingConfig(num_samples=6))],
                     [16, 8, 4])
    # Of long prompts, no more ahead of the lanes' than one prefill computes.
    self.assertEqual(sampler.slots_for(GREEDY, MAX_PREFILL_TOKENS // 3), 8 + 3)
    out = sampler.sample(self.params, self.prompts, GREEDY)
    self.assertEqual(sampler.compilations["prefill"], 1)  # One slot bucket: all 5 prompts.
    ref = make_sampler(max_batch=2, lanes=1).sample(self.params, self.prompts, GREEDY)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    for config in (two, GREEDY):
      np.testing.assert_array_equal(
          sampler.sample(self.params, self.prompts, config, seed=4).tokens,
          make_sampler(max_batch=2, lanes=1).sample(self.params, self.prompts, config,
                                                    seed=4).tokens)

  def test_engine_progress_bar_changes_no_sample(self):
    import contextlib, io, seqio  # pylint: disable=import-outside-toplevel,multiple-imports
    from restem_jax.engine.engine import Engine  # pylint: disable=import-outside-toplevel
    vocab = seqio.ByteVocabulary()  # 259 ids; TINY's 128 cover printable ASCII.
    engine = Engine(TINY, vocab, partitioning.make_mesh(devices=jax.devices()[:1]),
                    max_prompt_len=32, sample_batch=2)
    prompts = [f"{i} + {i} =" for i in range(5)]
    config = SamplingConfig(num_samples=3, temperature=1.0, max_new_tokens=6)
    quiet = engine.generate(self.params, prompts, config, seed=3, prompt_ids=range(5),
                            stop_strings=("\n",))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
      shown = engine.generate(self.params, prompts, config, seed=3, prompt_ids=range(5),
                              stop_strings=("\n",), desc="eval: test")
    self.assertEqual(shown, quiet)
    self.assertIn("eval: test", err.getvalue())
    self.assertIn("0/5 ", err.getvalue())  # A bar over the 5 prompts.

  def test_bad_prompts_fail_with_the_fix(self):
    sampler = make_sampler(max_prompt_len=8)
    with self.assertRaisesRegex(ConfigError, "prompt 1 has 9 tokens.*max_prompt_len is 8"):
      sampler.sample(self.params, [[1, 2], list(range(1, 10))], GREEDY)
    with self.assertRaisesRegex(ConfigError, "prompt 0 is empty"):
      sampler.sample(self.params, [[]], GREEDY)
    with self.assertRaisesRegex(ConfigError, "top_p"):
      SamplingConfig(top_p=0.0)


if __name__ == "__main__":
  absltest.main()
