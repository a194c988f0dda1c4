"""Tiny random Hugging Face checkpoints of each supported family (for the converter tests)."""

import os

import numpy as np

FAMILIES = {
    # Llama 3 style: GQA, llama3 RoPE scaling whose bands all fall inside head_dim 16, untied.
    "llama3": dict(model_type="llama", vocab_size=96, hidden_size=64, intermediate_size=112,
                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   rope_theta=5e5, tie_word_embeddings=False, rms_norm_eps=1e-5,
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 16}),
    # Llama 2 style: multi-head, linear RoPE scaling, tied.
    "llama2_linear": dict(model_type="llama", vocab_size=96, hidden_size=64,
                          intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=4, tie_word_embeddings=True,
                          rope_scaling={"rope_type": "linear", "factor": 4.0}),
    "qwen2": dict(model_type="qwen2", vocab_size=96, hidden_size=64, intermediate_size=112,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  rope_theta=1e6, tie_word_embeddings=True, rms_norm_eps=1e-6),
    # Gemma 1: multi-query, head_dim * heads != hidden, GeGLU, 1 + w norms, scaled embeddings.
    "gemma": dict(model_type="gemma", vocab_size=96, hidden_size=64, intermediate_size=112,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                  head_dim=32, hidden_act="gelu_pytorch_tanh"),
}


def make_checkpoint(family: str, directory: str, seed: int = 0, dtype: str = "float32",
                    max_shard_size: str | None = None):
  """Saves a random transformers model of `family`; returns the torch model (float32)."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  spec = dict(FAMILIES[family])
  config = transformers.AutoConfig.for_model(spec.pop("model_type"), **spec)
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():  # Random norms and biases too, so that every tensor matters.
    for name, p in model.named_parameters():
      if p.dim() == 1:
        p.normal_(0.0 if "norm" not in name or family == "gemma" else 1.0, 0.3)
  os.makedirs(directory, exist_ok=True)
  kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
  model.to(getattr(torch, dtype)).save_pretrained(directory, **kwargs)
  return model.float()


def torch_logits(model, tokens) -> np.ndarray:
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()


# Character tokenizers in the Hugging Face layout, with each family's special tokens.
SPECIALS = {"llama3": ["<unk>", "<s>", "</s>"], "gemma": ["<pad>", "<eos>", "<bos>", "<unk>"]}
CHARACTERS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ \n+-=?.:,!"


def write_tokenizer(family: str, directory: str, eos_ids=None) -> dict:
  """Writes tokenizer.json / tokenizer_config.json (and generation_config.json with `eos_ids`).

  Llama's tokenizer adds BOS through its post-processor (as Llama 3's does);
  Gemma's says so with `add_bos_token`. Returns the special token ids.
  """
  import json  # pylint: disable=import-outside-toplevel
  from tokenizers import Tokenizer, decoders, models, processors  # pylint: disable=import-outside-toplevel
  specials = SPECIALS[family]
  vocab = {token: i for i, token in enumerate(specials + list(CHARACTERS))}
  unk = "<unk>"
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk))
  tok.add_special_tokens(specials)
  tok.decoder = decoders.Fuse()
  bos, eos = ("<s>", "</s>") if family == "llama3" else ("<bos>", "<eos>")
  config = {"bos_token": bos, "eos_token": eos, "unk_token": unk}
  if family == "llama3":
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A",
                                                       special_tokens=[(bos, vocab[bos])])
  else:
    config["add_bos_token"] = True
  os.makedirs(directory, exist_ok=True)
  tok.save(os.path.join(directory, "tokenizer.json"))
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump(config, f)
  if eos_ids is not None:
    with open(os.path.join(directory, "generation_config.json"), "w") as f:
      json.dump({"eos_token_id": list(eos_ids)}, f)
  return {"bos": vocab[bos], "eos": vocab[eos]}
