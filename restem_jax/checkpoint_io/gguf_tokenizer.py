"""A GGUF file's own vocabulary as a Hugging Face `tokenizers.Tokenizer`.

Only byte-level BPE vocabularies (`tokenizer.ggml.model = gpt2`: SmolLM,
Llama 3, Qwen2) are rebuilt; the split regex follows the file's
`tokenizer.ggml.pre`, as transformers' GGUF loader does. No TensorFlow here:
`convert` writes the result as tokenizer.json without importing seqio.
"""

from __future__ import annotations

import json
import os

import tokenizers

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                   "special_tokens_map.json", "generation_config.json", "chat_template.jinja",
                   "vocab.json", "merges.txt")

_SPLITS = {  # llama.cpp pre-tokenizer name -> split regex (as transformers' GGUF loader).
    "llama-bpe": (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
    "qwen2": (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
              r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
}
_SPLITS["llama3"] = _SPLITS["llama-v3"] = _SPLITS["llama-bpe"]


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table (byte-level BPE spelling)."""
  bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1)))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))


def tokenizer_from_gguf(source) -> tokenizers.Tokenizer:
  """Rebuilds a byte-level BPE `tokenizers.Tokenizer` from a GGUF's vocabulary."""
  from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers  # pylint: disable=import-outside-toplevel
  kind = source.field("tokenizer.ggml.model")
  if kind != "gpt2":
    raise ValueError(
        f"{source.path}: GGUF tokenizer model {kind!r} is not supported (only byte-level BPE, "
        "'gpt2'). Convert from the Hugging Face directory, whose tokenizer.json is used as is.")
  tokens = list(source.field("tokenizer.ggml.tokens"))
  types = list(source.field("tokenizer.ggml.token_type") or [])
  merges = [tuple(m.split(" ", 1)) for m in source.field("tokenizer.ggml.merges")]
  alphabet = set(_bytes_to_unicode().values())
  spelling = _bytes_to_unicode()
  vocab = {(t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))): i
           for i, t in enumerate(tokens)}
  tokenizer = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
  pre = source.field("tokenizer.ggml.pre")
  if pre == "smollm":  # SmolLM's tokenizer.json: digits split one by one, then GPT-2.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  elif pre in _SPLITS:
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  else:
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  special = [AddedToken(t, special=True, normalized=False)
             for t, kind in zip(tokens, types) if kind == 3 and set(t) <= alphabet]
  tokenizer.add_special_tokens(special)
  return tokenizer


def write_gguf_tokenizer(source, directory: str) -> None:
  """Writes tokenizer.json + tokenizer_config.json built from a GGUF file."""
  tokenizer = tokenizer_from_gguf(source)
  tokenizer.save(os.path.join(directory, "tokenizer.json"))
  tokens = source.field("tokenizer.ggml.tokens")

  def token(key):
    index = source.field(f"tokenizer.ggml.{key}")
    return tokens[int(index)] if index is not None else None

  config = {"bos_token": token("bos_token_id"), "eos_token": token("eos_token_id"),
            "unk_token": token("unknown_token_id"), "pad_token": token("padding_token_id"),
            "add_bos_token": bool(source.field("tokenizer.ggml.add_bos_token", False)),
            "chat_template": source.field("tokenizer.chat_template")}
  with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)
