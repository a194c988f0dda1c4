"""The word-arithmetic sampling workload as plain token ids, for machines without TensorFlow.

`bench_sampler.py` and `bench_tunix.py` build their prompts from the task of
gin_configs/smollm2_135m_restem.gin, which needs seqio (TensorFlow). An
accelerator machine often lacks it, so `--dump_workload=FILE` writes the
exact ids here and `--workload=FILE` reads them there: same prompts, same
stops, no tokenizer needed.
"""

from __future__ import annotations

import json
import os
import sys
import types


def from_task(engine, prompts: int) -> dict:
  """Prompt texts and ids, EOS ids and stop sequences of the first `prompts` training problems."""
  from restem_jax.tasks import word_arithmetic  # pylint: disable=import-outside-toplevel
  task = word_arithmetic.make_word_arithmetic_task(
      engine.vocabulary, num_labelled=64, num_train=576, num_test=200, seed=0,
      name=f"bench_word_arithmetic_{os.getpid()}")
  texts = [p.prompt for p in task.load_split("train")[:prompts]]
  stopping = engine.stopping(task.stop_strings)
  return dict(texts=texts, prompts=[engine.encode_prompt(t) for t in texts],
              eos_ids=list(stopping.eos_ids), sequences=[list(s) for s in stopping.sequences],
              pad_id=engine.conventions.pad_id)


def load(path: str, prompts: int) -> dict:
  with open(path, encoding="utf-8") as f:
    work = json.load(f)
  if len(work["prompts"]) < prompts:
    raise SystemExit(f"{path} holds {len(work['prompts'])} prompts, fewer than {prompts}.")
  return dict(work, texts=work["texts"][:prompts], prompts=work["prompts"][:prompts])


def dump(work: dict, path: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(work, f)
  print(f"wrote {len(work['prompts'])} prompts to {path}")


def allow_without_seqio() -> None:
  """Lets older revisions import where seqio is missing: their engine names it in annotations only."""
  try:
    import seqio  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    sys.modules["seqio"] = types.SimpleNamespace(Vocabulary=object)
