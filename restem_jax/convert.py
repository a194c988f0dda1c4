"""Hugging Face / GGUF checkpoints <-> the restem_jax base checkpoint.

    python -m restem_jax.convert --input=HF_DIR_OR_GGUF --output=ORBAX_DIR [--verify]
    python -m restem_jax.convert --input=ORBAX_DIR --output=HF_DIR --to=hf

or from Python: `convert(input, output, verify=True)` and
`export_hf(ORBAX_DIR, HF_DIR)`. See docs/models.md for the output layout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import jax
import numpy as np
from etils import epath

from restem_jax.engine import partitioning
from restem_jax.checkpoint_io import hf_config as hfc
from restem_jax.checkpoint_io import checkpoints, files, gguf_tokenizer, safetensors_io, weights

DEFAULT_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.5, "float16": 0.1}


def _copy_tokenizer(opened, input_path: str, output: str) -> list[str]:
  if opened.kind == "gguf":
    gguf_tokenizer.write_gguf_tokenizer(opened.source, output)
    return ["tokenizer.json", "tokenizer_config.json"]
  copied = []
  for name in gguf_tokenizer.TOKENIZER_FILES:
    src = os.path.join(input_path, name)
    if os.path.exists(src):
      shutil.copyfile(src, os.path.join(output, name))
      copied.append(name)
  return copied


def convert(input_path: str, output: str, *, param_dtype: str = "float32",
            verify: bool = False, tolerance: float | None = None) -> dict[str, Any]:
  """Converts a Hugging Face directory or GGUF file to the base checkpoint.

  Writes output/params (Orbax), output/model.gin, output/hf_config.json and
  the tokenizer files. Returns a summary dict (with `max_abs_logit_diff`
  when verify=True); raises `VerificationError` when verification fails.
  """
  from restem_jax.checkpoint_io import loading  # pylint: disable=import-outside-toplevel
  input_path, output = os.fspath(input_path), os.fspath(output)
  opened = loading.open_checkpoint(input_path, param_dtype)
  if opened.kind == "converted":
    raise ValueError(f"{input_path} is already a converted restem_jax checkpoint; use --to=hf "
                     "to export it.")
  # Small files are written locally first and uploaded when the output is a bucket.
  local = tempfile.mkdtemp() if files.is_remote(output) else output
  os.makedirs(local, exist_ok=True)
  from restem_jax.engine.engine import Engine  # pylint: disable=import-outside-toplevel
  engine = Engine(opened.config, None, partitioning.make_mesh(devices=jax.devices()[:1]))
  params = loading.place_params(opened, input_path, engine)
  checkpoints.save(output, params)
  del params
  checkpoints.write_model_gin(os.path.join(local, checkpoints.MODEL_GIN), opened.config,
                              header=f"Converted by restem_jax.convert from {input_path}.")
  hf = {k: v for k, v in opened.hf_config.items() if k != "quantization_config"}
  with open(os.path.join(local, checkpoints.HF_CONFIG), "w", encoding="utf-8") as f:
    json.dump(hf, f, indent=2)
  summary: dict[str, Any] = {"input": input_path, "output": output, "kind": opened.kind,
                             "model_type": hf.get("model_type"),
                             "tokenizer_files": _copy_tokenizer(opened, input_path, local)}
  if local != output:
    for name in os.listdir(local):
      epath.Path(local, name).copy(epath.Path(output, name), overwrite=True)
    shutil.rmtree(local)
  if verify:
    tol = tolerance if tolerance is not None else DEFAULT_TOLERANCE[param_dtype]
    diff = verify_against_transformers(input_path, output)
    summary["max_abs_logit_diff"] = diff
    if not diff <= tol:
      raise VerificationError(
          f"max abs logit difference against transformers is {diff:.3g}, above the tolerance "
          f"{tol:g}: the converted model does not reproduce {input_path}.")
  return summary


def base_from_pretrained(path: str, *, source: str, **loop_context: Any) -> None:
  """A `run.make_base` for real models: converts `source` (HF dir or GGUF) to the base at `path`."""
  del loop_context  # The loop also passes its engine and data; a conversion needs neither.
  if jax.process_count() > 1:
    raise ValueError(
        f"no base checkpoint at {path!r}, and a multi-host run cannot convert one (conversion "
        "gathers the model on one host). Convert it once beforehand, e.g. `python -m "
        f"restem_jax.convert --input={source} --output={path}` on one host, then rerun.")
  # In a child process: what reading the source leaves behind (dequantised
  # tensors, the GGUF metadata, ~0.7 GB for SmolLM2) leaves with it.
  result = subprocess.run([sys.executable, "-m", "restem_jax.convert", f"--input={source}",
                           f"--output={path}"], capture_output=True, text=True, check=False)
  if result.returncode:  # 2: the source cannot be converted (the message says why).
    error = ValueError if result.returncode == 2 else RuntimeError
    raise error(f"converting {source} to the base checkpoint {path} failed:\n"
                f"{result.stderr[-4000:].strip()}")


class VerificationError(RuntimeError):
  """The converted model's logits differ from transformers' beyond tolerance."""


def transformers_model(input_path: str):
  """The transformers reference model (float32, CPU) for a HF dir or GGUF file."""
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import AutoModelForCausalLM  # pylint: disable=import-outside-toplevel
  if os.path.isfile(input_path):
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(input_path)), gguf_file=os.path.basename(input_path),
        dtype=torch.float32)
  else:
    model = AutoModelForCausalLM.from_pretrained(input_path, dtype=torch.float32)
  return model.eval()


def verify_against_transformers(input_path: str, converted: str, tokens=None) -> float:
  """Max abs logit difference between transformers(input) and restem_jax(converted)."""
  import torch  # pylint: disable=import-outside-toplevel
  from restem_jax.checkpoint_io.loading import load_model  # pylint: disable=import-outside-toplevel
  ours = load_model(converted, mesh=partitioning.make_mesh(devices=jax.devices()[:1]),
                    tokenizer=False)
  if tokens is None:
    tokens = np.random.default_rng(0).integers(0, ours.config.vocab_size, (2, 16))
  tokens = np.asarray(tokens, np.int32)
  reference = transformers_model(input_path)
  with torch.no_grad():
    expected = reference(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()
  return float(np.max(np.abs(ours.logits(tokens) - expected)))


def export_hf(checkpoint: Any, output: str, dtype: str | None = None,
              max_shard_bytes: int = 4 << 30) -> list[str]:
  """Writes a converted checkpoint (directory or LoadedModel) as a HF directory.

  Produces config.json, model.safetensors (or shards + index) and the
  tokenizer files; transformers' `from_pretrained(output)` loads it.
  """
  from restem_jax.checkpoint_io.loading import LoadedModel, load_model  # pylint: disable=import-outside-toplevel
  model = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(
      os.fspath(checkpoint), mesh=partitioning.make_mesh(devices=jax.devices()[:1]),
      tokenizer=False)
  cfg = model.config
  hf = dict(model.hf_config) or {}
  hf.update(hfc.hf_config_from_model_config(cfg))  # The shapes always come from the model.
  dtype = dtype or cfg.param_dtype
  hf["torch_dtype"] = dtype
  hf.pop("quantization_config", None)
  for key in ("rope_parameters",):
    hf.pop(key, None)
  os.makedirs(output, exist_ok=True)
  with open(os.path.join(output, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf, f, indent=2)
  tensors = weights.hf_tensors_from_params(model.params, cfg, dtype=np.dtype(
      jax.numpy.dtype(dtype)))
  written = ["config.json"] + safetensors_io.write_sharded(output, tensors, max_shard_bytes)
  if model.path and os.path.isdir(model.path):
    for name in gguf_tokenizer.TOKENIZER_FILES:
      src = os.path.join(model.path, name)
      if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(
          os.path.join(output, name)):
        shutil.copyfile(src, os.path.join(output, name))
        written.append(name)
  return written


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m restem_jax.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--input", required=True,
                      help="Hugging Face directory or .gguf file (or, with --to=hf, a converted "
                           "restem_jax checkpoint directory).")
  parser.add_argument("--output", required=True, help="directory to write")
  parser.add_argument("--to", choices=("restem", "hf"), default="restem",
                      help="restem: HF/GGUF -> base checkpoint (default); hf: export back.")
  parser.add_argument("--param_dtype", default="float32",
                      choices=("float32", "bfloat16", "float16"))
  parser.add_argument("--verify", action="store_true",
                      help="after converting, compare logits with transformers on the same "
                           "tokens and fail above --tolerance.")
  parser.add_argument("--tolerance", type=float, default=None,
                      help="max abs logit difference allowed by --verify (default 1e-3 in "
                           "float32).")
  args = parser.parse_args(argv)
  try:
    if args.to == "hf":
      for name in export_hf(args.input, args.output, dtype=None):
        print(os.path.join(args.output, name))
      return 0
    summary = convert(args.input, args.output, param_dtype=args.param_dtype,
                      verify=args.verify, tolerance=args.tolerance)
  except VerificationError as e:
    print(f"verification FAILED: {e}", file=sys.stderr)
    return 1
  except (hfc.UnsupportedModelError, FileNotFoundError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"converted {summary['kind']} checkpoint ({summary['model_type']}) to {args.output}")
  print(f"tokenizer files: {', '.join(summary['tokenizer_files']) or 'none'}")
  if "max_abs_logit_diff" in summary:
    print(f"verify: max abs logit difference vs transformers = "
          f"{summary['max_abs_logit_diff']:.3g} (OK)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
