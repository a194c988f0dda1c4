"""What the loop needs from a task, and its registration as a seqio Task.

A task is a set of problems per split, a binary reward over (record,
completion), an answer extractor for majority voting, and stop strings that
end a completion before the model starts the next few-shot problem. A task
without an answer key (an exam graded by hand) has no reward: it can be
evaluated (`restem_jax.transfer` writes a grading sheet) but not trained on.
Each task is also registered in `seqio.TaskRegistry`, and the loop reads its
problems back through seqio, so a seqio user can inspect exactly what the loop
sees.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Hashable, Mapping, Sequence

import seqio

Record = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Problem:
  """One problem: the text the model continues, and the record its reward reads."""
  id: str
  prompt: str
  record: Record
  reference: str | None = None  # A human-written solution, where the split has one.


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Everything the ReST^EM loop needs to know about a task."""
  name: str
  load_split: Callable[[str], Sequence[Problem]]
  splits: tuple[str, ...]
  reward: Callable[[Record, str], float] | None  # None: no answer key, graded by hand.
  extract_answer: Callable[[str], Hashable | None]
  stop_strings: tuple[str, ...]
  vocabulary: seqio.Vocabulary
  # Optional batched reward (e.g. a sandbox process pool); else `reward` per sample.
  score_batch: Callable[[Sequence[Record], Sequence[str]], list[float]] | None = None

  @property
  def has_reward(self) -> bool:
    return self.reward is not None or self.score_batch is not None

  def score(self, records: Sequence[Record], completions: Sequence[str]) -> list[float]:
    if not self.has_reward:
      raise ValueError(f"task {self.name!r} has no reward (no answer key): it can only be "
                       "evaluated by `python -m restem_jax.transfer`, which writes a grading "
                       "sheet to fill by hand.")
    if self.score_batch is not None:
      return list(self.score_batch(records, completions))
    return [float(self.reward(r, c)) for r, c in zip(records, completions)]


_SPECS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
  """Registers `spec` (replacing an earlier one of the same name) and its seqio Task."""
  _SPECS[spec.name] = spec
  if spec.name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(spec.name)
  seqio.TaskRegistry.add(
      spec.name,
      source=seqio.FunctionDataSource(_dataset_fn(spec), splits=spec.splits),
      output_features={
          "inputs": seqio.Feature(spec.vocabulary, add_eos=False),
          "targets": seqio.Feature(spec.vocabulary, add_eos=True),
      },
      preprocessors=[])
  return spec


def get(name: str) -> TaskSpec:
  if name not in _SPECS:
    raise KeyError(f"unknown task {name!r}; registered tasks: {sorted(_SPECS)}. Import the "
                   "module that registers it (e.g. restem_jax.tasks) or fix the task name in gin.")
  return _SPECS[name]


def _dataset_fn(spec: TaskSpec):
  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
    del shuffle_files, seed  # Problems keep their order: ids and resume rely on it.
    import tensorflow as tf
    problems = spec.load_split(split)
    columns = {
        "id": [p.id for p in problems],
        "inputs": [p.prompt for p in problems],
        "targets": [p.reference or "" for p in problems],
        "record": [json.dumps(dict(p.record), sort_keys=True) for p in problems],
    }
    return tf.data.Dataset.from_tensor_slices(
        {k: tf.constant(v, tf.string) for k, v in columns.items()})
  return dataset_fn


def load_problems(name: str, split: str) -> list[Problem]:
  """Reads a split back through the registered seqio Task, in order."""
  task = seqio.get_mixture_or_task(name)
  if split not in task.splits:
    raise ValueError(f"task {name!r} has no split {split!r}; it has {list(task.splits)}.")
  problems = []
  for ex in task.source.get_dataset(split=split, shuffle=False).as_numpy_iterator():
    reference = ex["targets"].decode()
    problems.append(Problem(id=ex["id"].decode(), prompt=ex["inputs"].decode(),
                            record=json.loads(ex["record"]), reference=reference or None))
  return problems
