"""seqio vocabularies for converted models: tokenizer.json, SentencePiece, GGUF.

`vocabulary_for(path)` picks the model's own tokenizer: `tokenizer.json`
(Hugging Face `tokenizers`, exact HF behaviour) if present, else
`tokenizer.model` (SentencePiece), else the vocabulary stored in a GGUF file.

seqio conventions hold: `encode` adds neither BOS nor EOS (seqio appends EOS
through the feature's `add_eos`), `decode` stops after the first EOS and drops
special tokens. The model's own conventions are extra attributes: `bos_id`,
`add_bos` (whether the model expects BOS first: Llama, Gemma yes; Qwen2,
SmolLM2 no), `eos_ids` (every id that ends a turn, e.g. Llama 3's
<|eot_id|>), `chat_template` and `apply_chat_template(messages)`. The engine
(`restem_jax.engine.engine`) reads these conventions; its `encode_prompt` is
the one place BOS is added.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf
import tokenizers
from etils import epath

from restem_jax.checkpoint_io import chat_template, files
from restem_jax.checkpoint_io.gguf_tokenizer import TOKENIZER_FILES, write_gguf_tokenizer

__all__ = ["HuggingFaceVocabulary", "SentencePieceVocabulary", "TOKENIZER_FILES",
           "vocabulary_for", "vocabulary_from_directory", "write_gguf_tokenizer"]


class _ModelConventions:
  """BOS/EOS/chat-template handling shared by the vocabularies below."""

  bos_id: int | None = None
  add_bos: bool = False
  eos_ids: tuple[int, ...] = ()
  chat_template: str | None = None
  bos_token: str | None = None
  eos_token: str | None = None

  # The tokenizer config's named special tokens (bos_token, pad_token, ...) as strings:
  # what transformers shows templates. None: no config, the bos/eos above instead.
  special_tokens: Mapping[str, str] | None = None

  def apply_chat_template(self, messages: Sequence[Mapping[str, Any]],
                          add_generation_prompt: bool = True,
                          tools: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any) -> str:
    """Renders chat messages with the model's Jinja template exactly as transformers does.

    Like transformers, the template also sees the special tokens (`bos_token`,
    ...) and `kwargs` (e.g. `documents`, `continue_final_message`,
    `date_string`); see `chat_template.render`. The result already contains
    any BOS the template writes; the engine's `encode_prompt` keeps that one
    and adds no second.
    """
    if not self.chat_template:
      raise ValueError("this model's tokenizer has no chat template; format prompts yourself.")
    named = self.special_tokens
    if named is None:
      named = {k: v for k, v in (("bos_token", self.bos_token), ("eos_token", self.eos_token))
               if v is not None}
    variables = {**named, **kwargs}
    return chat_template.render(self.chat_template, messages, tools=tools,
                                add_generation_prompt=add_generation_prompt, **variables)


def _tf_encode(vocab, s: tf.Tensor) -> tf.Tensor:
  def run(x):
    x = x.item() if isinstance(x, np.ndarray) else x
    return np.asarray(vocab._encode(x.decode("utf-8") if isinstance(x, bytes) else x), np.int32)
  out = tf.numpy_function(run, [s], tf.int32)
  out.set_shape([None])
  return out


def _tf_decode(vocab, ids: tf.Tensor) -> tf.Tensor:
  def run(x):
    if x.ndim == 1:
      return np.asarray(vocab.decode(x.tolist()).encode("utf-8"), object)
    return np.asarray([vocab.decode(row.tolist()).encode("utf-8") for row in x], object)
  out = tf.numpy_function(run, [ids], tf.string)
  out.set_shape(ids.shape[:-1])
  return out


class HuggingFaceVocabulary(_ModelConventions, seqio.Vocabulary):
  """A `tokenizers.Tokenizer` (tokenizer.json) as a seqio vocabulary."""

  def __init__(self, tokenizer: tokenizers.Tokenizer | str, *, eos_ids: Sequence[int] = (),
               bos_id: int | None = None, unk_id: int | None = None, add_bos: bool = False,
               chat_template: str | None = None, vocab_size: int | None = None,
               special_tokens: Mapping[str, str] | None = None):
    if isinstance(tokenizer, str):
      tokenizer = tokenizers.Tokenizer.from_file(tokenizer)
    self.tokenizer = tokenizer
    self.eos_ids = tuple(int(i) for i in eos_ids)
    self.bos_id, self._unk_id, self.add_bos = bos_id, unk_id, add_bos
    self.chat_template, self.special_tokens = chat_template, special_tokens
    self.bos_token = tokenizer.id_to_token(bos_id) if bos_id is not None else None
    self.eos_token = tokenizer.id_to_token(self.eos_ids[0]) if self.eos_ids else None
    self._size = max(tokenizer.get_vocab_size(with_added_tokens=True), vocab_size or 0)
    super().__init__(extra_ids=0)

  @property
  def eos_id(self) -> int | None:
    return self.eos_ids[0] if self.eos_ids else None

  @property
  def unk_id(self) -> int | None:
    return self._unk_id

  @property
  def _base_vocab_size(self) -> int:
    return self._size

  def _encode(self, s: str) -> Sequence[int]:
    return self.tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids) -> str:
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    return _tf_encode(self, s)

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    return _tf_decode(self, ids)

  def __eq__(self, other):
    return (isinstance(other, HuggingFaceVocabulary)
            and self.tokenizer.to_str() == other.tokenizer.to_str())

  def __hash__(self):
    return hash(self.tokenizer.to_str())


class SentencePieceVocabulary(_ModelConventions, seqio.SentencePieceVocabulary):
  """seqio's SentencePiece vocabulary plus the model's BOS/EOS/chat conventions."""

  def __init__(self, model_file: str, *, add_bos: bool = True,
               chat_template: str | None = None, eos_ids: Sequence[int] = (),
               special_tokens: Mapping[str, str] | None = None):
    super().__init__(model_file)
    self.add_bos, self.chat_template, self.special_tokens = add_bos, chat_template, special_tokens
    sp = self.tokenizer
    self.bos_id = sp.bos_id() if sp.bos_id() >= 0 else None
    self.eos_ids = tuple(eos_ids) or ((sp.eos_id(),) if sp.eos_id() >= 0 else ())
    self.bos_token = sp.id_to_piece(self.bos_id) if self.bos_id is not None else None
    self.eos_token = sp.id_to_piece(self.eos_ids[0]) if self.eos_ids else None


# ----------------------------------------------------------------------------- directories


# transformers' named special tokens, the ones its chat templates see.
_SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                        "cls_token", "mask_token")


def _token_str(value: Any) -> str | None:
  return value.get("content") if isinstance(value, dict) else value


def _load_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _as_list(value) -> list[int]:
  if value is None:
    return []
  return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def vocabulary_from_directory(directory: str, vocab_size: int | None = None):
  """The vocabulary of a Hugging Face (or converted restem_jax) directory."""
  tok_config = _load_json(os.path.join(directory, "tokenizer_config.json"))
  generation = _load_json(os.path.join(directory, "generation_config.json"))
  model_config = (_load_json(os.path.join(directory, "config.json"))
                  or _load_json(os.path.join(directory, "hf_config.json")))
  template = tok_config.get("chat_template")
  template_file = os.path.join(directory, "chat_template.jinja")
  if template is None and os.path.exists(template_file):
    with open(template_file, encoding="utf-8") as f:
      template = f.read()
  special = {name: _token_str(tok_config.get(name)) for name in _SPECIAL_TOKEN_NAMES}
  special = {name: token for name, token in special.items() if token is not None} or None
  if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
    template = next((t["template"] for t in template if t.get("name") == "default"),
                    template[0]["template"])
  json_path = os.path.join(directory, "tokenizer.json")
  if os.path.exists(json_path):
    tokenizer = tokenizers.Tokenizer.from_file(json_path)

    def token_id(name):
      token = _token_str(tok_config.get(name))
      return tokenizer.token_to_id(token) if token is not None else None

    eos = (_as_list(generation.get("eos_token_id")) or _as_list(token_id("eos_token"))
           or _as_list(model_config.get("eos_token_id")))
    bos = token_id("bos_token")
    if bos is None:
      bos = (_as_list(generation.get("bos_token_id")) or _as_list(model_config.get("bos_token_id"))
             or [None])[0]
    if "add_bos_token" in tok_config:
      add_bos = bool(tok_config["add_bos_token"]) and bos is not None
    else:  # The post-processor (e.g. Llama 3's template) decides.
      with_special = tokenizer.encode("a", add_special_tokens=True).ids
      add_bos = bos is not None and bool(with_special) and with_special[0] == bos
    return HuggingFaceVocabulary(tokenizer, eos_ids=eos, bos_id=bos, unk_id=token_id("unk_token"),
                                 add_bos=add_bos, chat_template=template, vocab_size=vocab_size,
                                 special_tokens=special)
  sp_path = os.path.join(directory, "tokenizer.model")
  if os.path.exists(sp_path):
    return SentencePieceVocabulary(sp_path, add_bos=tok_config.get("add_bos_token", True),
                                   chat_template=template,
                                   eos_ids=_as_list(generation.get("eos_token_id")),
                                   special_tokens=special)
  raise FileNotFoundError(f"{directory} has neither tokenizer.json nor tokenizer.model.")


def vocabulary_for(path: str, vocab_size: int | None = None):
  """The vocabulary of a converted directory (local or gs://), a HF directory or a GGUF file."""
  import tempfile  # pylint: disable=import-outside-toplevel
  if os.path.isfile(path) and path.endswith(".gguf"):
    from restem_jax.checkpoint_io.gguf_io import GGUFSource  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory() as tmp:
      write_gguf_tokenizer(GGUFSource(path), tmp)
      return vocabulary_from_directory(tmp, vocab_size)
  if files.is_remote(path):  # The tokenizer libraries read local files.
    with tempfile.TemporaryDirectory() as tmp:
      for name in TOKENIZER_FILES + ("config.json", "hf_config.json"):
        if files.exists(os.path.join(path, name)):
          epath.Path(path, name).copy(epath.Path(tmp, name))
      return vocabulary_from_directory(tmp, vocab_size)
  return vocabulary_from_directory(path, vocab_size)
