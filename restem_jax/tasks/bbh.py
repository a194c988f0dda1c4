"""BIG-Bench Hard (Suzgun et al. 2022): 27 subtasks, 3-shot prompts, exact match; evaluation only.

Data: the authors' repository (github.com/suzgunmirac/BIG-Bench-Hard) as
DATA_DIR/BIG-Bench-Hard/:

  bbh/<subtask>.json         {"canary": ..., "examples": [{"input": ..., "target": ...}]}
  cot-prompts/<subtask>.txt  a canary line, "-----", the task description, 3 CoT exemplars

Two seqio tasks, each one split, "test" (all 6,511 examples), problem ids
"<subtask>/<index>", records the example plus "subtask" and "mode":

  restem_bbh_cot  the prompt file after its "-----" line, then
                  "\\n\\nQ: {input}\\nA: Let's think step by step."
  restem_bbh      the same exemplars answered with their final answer only:
                  "Q: {question}\\nA: {answer}", then "\\n\\nQ: {input}\\nA:"

Both are the prompts the authors gave code-davinci-002, as its recorded
outputs show (tests/test_bbh.py). The direct prompts keep only the first
paragraph of the description: snarks' second (a definition of sarcasm) is in
its CoT prompt alone. Reward: the reward service's "bbh" (rewards/bbh.py).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

from restem_jax.rewards import bbh as bbh_reward
from restem_jax.tasks import base, common, readers

ROOT = "BIG-Bench-Hard"
SUBTASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa",
    "dyck_languages", "formal_fallacies", "geometric_shapes", "hyperbaton",
    "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "movie_recommendation", "multistep_arithmetic_two",
    "navigate", "object_counting", "penguins_in_a_table", "reasoning_about_colored_objects",
    "ruin_names", "salient_translation_error_detection", "snarks", "sports_understanding",
    "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects",
    "web_of_lies", "word_sorting")
COT_CUE = "\nA: Let's think step by step."
_SEPARATOR = "-----"
_QUESTION = "\n\nQ: "
# The other readers' file reading and record checks, for the same errors (file and line).
_read_json, _read_utf8, _require, _check = (  # pylint: disable=protected-access
    readers._read_json, readers._read_utf8, readers._require, readers._check)


def _path(data_dir: str, folder: str, name: str) -> str:
  path = os.path.join(data_dir, ROOT, folder, name)
  if not os.path.isfile(path):
    raise readers.DatasetMissingError(
        f"BIG-Bench Hard: {path} not found. Place the BIG-Bench-Hard repository "
        f"(github.com/suzgunmirac/BIG-Bench-Hard: bbh/<subtask>.json, "
        f"cot-prompts/<subtask>.txt) at {os.path.join(data_dir, ROOT)} (see docs/tasks.md).")
  return path


def read_examples(data_dir: str, subtask: str) -> list[dict[str, Any]]:
  """The subtask's examples, in file order, as {"input", "target"} dicts."""
  path = _path(data_dir, "bbh", f"{subtask}.json")
  data = _read_json(path)
  examples = data.get("examples") if isinstance(data, dict) else None
  if not isinstance(examples, list):
    raise readers.MalformedRecordError(f"{path}: expected {{\"examples\": [...]}}")
  return [dict(_require(e, ("input", "target"), f"{path}: example {i}"))
          for i, e in enumerate(examples)]


def read_cot_prompt(data_dir: str, subtask: str) -> str:
  """The subtask's CoT few-shot prompt: the prompt file's text after its "-----" line."""
  path = _path(data_dir, "cot-prompts", f"{subtask}.txt")
  lines = _read_utf8(path).split("\n")
  if _SEPARATOR not in lines:
    raise readers.MalformedRecordError(f"{path}: no {_SEPARATOR!r} line before the prompt")
  # A final newline (an editor's) would change every prompt; the authors' files have none.
  prompt = "\n".join(lines[lines.index(_SEPARATOR) + 1:]).rstrip("\n")
  if COT_CUE not in prompt:
    raise readers.MalformedRecordError(f"{path}: no exemplar answered {COT_CUE.strip()!r}")
  return prompt


def direct_prompt(cot_prompt: str, where: str = "prompt") -> str:
  """The answer-only prompt: the description's first paragraph, and each CoT exemplar's
  question answered with its final answer as the reward reads it (no trailing ".")."""
  description, *exemplars = cot_prompt.split(_QUESTION)
  parts = [description.split("\n\n", 1)[0]]
  for i, exemplar in enumerate(exemplars):
    question, cue, reasoning = exemplar.partition(COT_CUE)
    answer = bbh_reward.extract_answer(reasoning, "cot") if cue else None
    if answer is None:
      raise readers.MalformedRecordError(
          f"{where}: exemplar {i} has no {COT_CUE.strip()!r} ... 'the answer is X.'")
    parts.append(f"{question}\nA: {answer}")
  return _QUESTION.join(parts)


def bbh_problems(data_dir: str, mode: str, subtasks: Sequence[str]) -> list[base.Problem]:
  """Every example of `subtasks`, prompted for `mode` ("cot" or "direct")."""
  out = []
  for subtask in subtasks:
    shots = read_cot_prompt(data_dir, subtask)
    if mode == "direct":
      shots = direct_prompt(shots, os.path.join(data_dir, ROOT, "cot-prompts", f"{subtask}.txt"))
    cue = COT_CUE if mode == "cot" else "\nA:"
    examples = read_examples(data_dir, subtask)
    where = os.path.join(data_dir, ROOT, "bbh", f"{subtask}.json")
    for index, example in enumerate(examples):
      pid = f"{subtask}/{index}"
      record = {**example, "subtask": subtask, "mode": mode}
      _check("bbh", pid, record, f"{where}: example {index}")
      # A direct target is what the model should write after "A:"; CoT has no human rationale.
      reference = f" {example['target']}" if mode == "direct" else None
      out.append(base.Problem(id=pid, prompt=f"{shots}{_QUESTION}{example['input']}{cue}",
                              record=record, reference=reference))
  return out


def _make(mode: str, name: str, data_dir: str | None, vocabulary,
          subtasks: Sequence[str] | None) -> base.TaskSpec:
  data_dir = data_dir or common.default_data_dir()
  subtasks = tuple(SUBTASKS if subtasks is None else subtasks)
  unknown = sorted(set(subtasks) - set(SUBTASKS))
  if unknown or not subtasks or len(set(subtasks)) < len(subtasks):
    raise ValueError(f"subtasks={list(subtasks)}: need distinct names from {SUBTASKS}"
                     + (f"; unknown: {unknown}" if unknown else ""))
  loaders = {"test": lambda: bbh_problems(data_dir, mode, subtasks)}
  extract = functools.partial(bbh_reward.extract_answer, mode=mode)
  return common.register_benchmark(name, "bbh", loaders, bbh_reward.STOP_STRINGS, vocabulary,
                                   extract)


def make_bbh_cot_task(data_dir: str | None = None, vocabulary=None,
                      subtasks: Sequence[str] | None = None,
                      name: str = "restem_bbh_cot") -> base.TaskSpec:
  """Registers 3-shot chain-of-thought BBH as `name` (all subtasks unless `subtasks`)."""
  return _make("cot", name, data_dir, vocabulary, subtasks)


def make_bbh_task(data_dir: str | None = None, vocabulary=None,
                  subtasks: Sequence[str] | None = None,
                  name: str = "restem_bbh") -> base.TaskSpec:
  """Registers 3-shot direct (answer-only) BBH as `name` (all subtasks unless `subtasks`)."""
  return _make("direct", name, data_dir, vocabulary, subtasks)
