"""The Engine: sampler/trainer agreement on log-probs, the model's BOS/EOS conventions."""

import dataclasses

import jax
import numpy as np
import seqio
from absl.testing import absltest

from restem_jax.engine import partitioning
from restem_jax.engine.config import ConfigError, ModelConfig
from restem_jax.engine.engine import Conventions, Engine
from restem_jax.engine.sampler import SamplingConfig
from tests.utils import TINY, random_prompts

# PaLM-style (parallel block, multi-query, tied) and Llama-style (sequential block,
# grouped-query attention, untied head, large RoPE theta).
CONFIGS = {
    "palm": TINY,
    "llama_gqa": ModelConfig(vocab_size=128, embed_dim=64, num_layers=2, num_heads=4,
                             num_kv_heads=2, head_dim=16, mlp_dim=128, parallel_block=False,
                             tie_embeddings=False, rope_theta=5e5, norm_eps=1e-5),
}


def one_device_engine(cfg, vocabulary=None, **kwargs):
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  return Engine(cfg, vocabulary, mesh, max_prompt_len=32, sample_batch=8, **kwargs)


class SamplerTrainerAgreementTest(absltest.TestCase):

  def test_sampled_logprobs_equal_the_training_forward(self):
    prompts = random_prompts(5, 128, low=3, high=20, seed=3)
    e_step = SamplingConfig(num_samples=3, temperature=0.7, top_k=40, max_new_tokens=12)
    for name, cfg in CONFIGS.items():
      with self.subTest(config=name):
        engine = one_device_engine(cfg)
        params = engine.init_params(1)
        out = engine.sample(params, prompts, e_step, seed=5)
        rows = [(p, t[:n].tolist(), lp[:n]) for p, tokens, lengths, logprobs
                in zip(prompts, out.tokens, out.lengths, out.logprobs)
                for t, n, lp in zip(tokens, lengths, logprobs)]
        scored = engine.token_logprobs(params, [p for p, _, _ in rows], [t for _, t, _ in rows])
        for (_, tokens, sampled), trained in zip(rows, scored):
          self.assertLen(trained, len(tokens))
          np.testing.assert_allclose(sampled, trained, atol=1e-5, rtol=0)
        # Sampling at T=0.7 picked tokens the model found likely, not argmax only.
        self.assertGreater(len({tuple(t) for _, t, _ in rows}), 10)


class _BosVocabulary(seqio.ByteVocabulary):
  """Bytes, plus the conventions of a model that wants BOS first and ends turns two ways."""
  bos_id, add_bos, eos_ids = 2, True, (1, 13)  # 13: "\n" (ByteVocabulary ids are bytes + 3).


class ConventionsTest(absltest.TestCase):

  def test_bos_exactly_once(self):
    engine = one_device_engine(dataclasses.replace(TINY, vocab_size=264),
                               _BosVocabulary())
    text = list(seqio.ByteVocabulary().encode("ab"))
    self.assertEqual(engine.encode_prompt("ab"), [2] + text)
    examples = engine.examples(["ab", "cd"], ["x", "y"], seq_len=16)[0]
    self.assertTrue(np.all(examples.tokens[:, 0] == 2))
    self.assertTrue(np.all(examples.tokens[:, 1] != 2))
    # The target ends with the first EOS id; only target and EOS carry loss.
    self.assertEqual(examples.tokens[0, :5].tolist(), [2] + text + [ord("x") + 3, 1])
    self.assertEqual(examples.target_mask[0, :6].tolist(), [0, 0, 0, 1, 1, 0])

  def test_stopping_has_every_eos_id(self):
    self.assertEqual(Conventions.of(_BosVocabulary()).eos_ids, (1, 13))
    engine = one_device_engine(dataclasses.replace(TINY, vocab_size=264),
                               _BosVocabulary())
    self.assertEqual(engine.stopping(["\n\n"]).eos_ids, (1, 13))
    self.assertEqual(engine.stopping(stop_at_eos=False).eos_ids, ())

  def test_byte_vocabulary_has_no_bos(self):
    conventions = Conventions.of(seqio.ByteVocabulary())
    self.assertEqual((conventions.add_bos, conventions.eos_ids), (False, (1,)))

  def test_no_vocabulary(self):
    engine = one_device_engine(TINY)
    with self.assertRaisesRegex(ValueError, "no vocabulary"):
      engine.encode_prompt("x")
    with self.assertRaisesRegex(ConfigError, "no EOS id"):
      engine.encode_target("x")


if __name__ == "__main__":
  absltest.main()
