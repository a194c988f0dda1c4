"""The base checkpoint directory that `convert` writes and the loop reads.

    ORBAX_DIR/
      params/            Orbax (StandardCheckpointer) save of the Decoder's params
                         pytree: nested dicts exactly as `Decoder.init` makes them.
      model.gin          `ModelConfig.*` bindings (gin syntax, one per line).
      hf_config.json     the source config.json (used by export and --verify).
      tokenizer.json / tokenizer.model / tokenizer_config.json / ...
                         the tokenizer files, copied (or built from a GGUF vocab).

`restore_params` reads it back shard by shard onto any mesh.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from typing import Any

from restem_jax.config import ModelConfig

PARAMS_SUBDIR = "params"
MODEL_GIN = "model.gin"
HF_CONFIG = "hf_config.json"


def model_gin_text(cfg: ModelConfig, header: str = "") -> str:
  lines = [f"# {line}" for line in header.splitlines()]
  for field in dataclasses.fields(ModelConfig):
    lines.append(f"ModelConfig.{field.name} = {getattr(cfg, field.name)!r}")
  return "\n".join(lines) + "\n"


def write_model_gin(path: str, cfg: ModelConfig, header: str = "") -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.write(model_gin_text(cfg, header))


def read_model_gin(path: str, **overrides: Any) -> ModelConfig:
  """ModelConfig from a model.gin of `ModelConfig.name = literal` lines.

  Parsed without gin's global registry, so reading a checkpoint never
  disturbs the caller's gin configuration.
  """
  values: dict[str, Any] = {}
  names = {f.name for f in dataclasses.fields(ModelConfig)}
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      line = line.split("#", 1)[0].strip()
      if not line:
        continue
      target, _, literal = line.partition("=")
      target = target.strip()
      name = target.rsplit(".", 1)[-1]
      if not target.endswith("ModelConfig." + name) or name not in names:
        raise ValueError(f"{path}:{number}: expected `ModelConfig.<field> = <value>`, got {line!r}.")
      values[name] = ast.literal_eval(literal.strip())
  values.update(overrides)
  return ModelConfig(**values)


def save_params(directory: str, params: Any) -> str:
  """Writes params to directory/params; returns that path."""
  from restem_jax import checkpoints  # pylint: disable=import-outside-toplevel
  checkpoints.save(directory, params)
  return os.path.join(os.path.abspath(directory), PARAMS_SUBDIR)


def restore_params(directory: str, abstract: Any, shardings: Any) -> Any:
  """Restores params with each leaf read shard by shard into its sharding."""
  from restem_jax import checkpoints  # pylint: disable=import-outside-toplevel
  return checkpoints.restore(directory, abstract, shardings)


def is_converted(path: str) -> bool:
  return os.path.isdir(path) and os.path.exists(os.path.join(path, MODEL_GIN)) and os.path.isdir(
      os.path.join(path, PARAMS_SUBDIR))
