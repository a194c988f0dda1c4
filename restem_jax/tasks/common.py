"""Shared plumbing of the benchmark tasks: vocabulary, train subsets, reward wiring, registration.

A benchmark task module supplies, per split, a function returning `Problem`s;
`register_benchmark` wraps them with caching and the training-set options
every benchmark shares (a seeded subset of `max_train` questions, or the ids
listed in `train_ids_file`, e.g. one difficulty bin), and registers the
`TaskSpec` (and so the seqio Task) with the reward service's reward.

Splits: "train", "test", and "labelled" = the training problems that carry a
human reference solution, for the SFT baselines. The loop carves its
validation slice out of "train" (`RestemConfig.val_size`, `val_seed`).
"""

from __future__ import annotations

import functools
import os
import random
from typing import Callable, Hashable, Sequence

import seqio

from restem_jax import rewards
from restem_jax.tasks import base

DATA_DIR_ENV = "RESTEM_DATA_DIR"


def default_data_dir() -> str:
  """$RESTEM_DATA_DIR, else ./data: where tasks registered at import look."""
  return os.environ.get(DATA_DIR_ENV, "data")


def task_vocabulary(checkpoint_dir: str | None = None, vocab_size: int | None = None):
  """The model's own vocabulary (tokenizer.json / tokenizer.model / GGUF), else bytes.

  gin: `make_math_task.vocabulary = @task_vocabulary()` with
  `task_vocabulary.checkpoint_dir = '/ckpt/gemma_2b'`.
  """
  if checkpoint_dir is None:
    return seqio.ByteVocabulary()
  from restem_jax.checkpoint_io.vocabularies import vocabulary_for  # pylint: disable=import-outside-toplevel
  return vocabulary_for(checkpoint_dir, vocab_size)


def read_ids(path: str) -> list[str]:
  """Problem ids, one per line (blank lines and '#' comments ignored)."""
  with open(path, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def select_train(problems: Sequence[base.Problem], max_train: int | None, seed: int,
                 ids_file: str | None) -> list[base.Problem]:
  """The training problems to use: those in `ids_file` (if set), then a seeded subset."""
  problems = list(problems)
  if ids_file:
    wanted = read_ids(ids_file)
    by_id = {p.id: p for p in problems}
    unknown = [i for i in wanted if i not in by_id]
    if unknown:
      raise ValueError(f"{ids_file}: {len(unknown)} id(s) not in the train split, e.g. "
                       f"{unknown[:3]}")
    keep = set(wanted)
    problems = [p for p in problems if p.id in keep]
  if max_train is not None and max_train < len(problems):
    # A seeded choice, kept in dataset order; nested: a smaller subset is inside a larger one.
    order = list(range(len(problems)))
    random.Random(f"max_train/{seed}").shuffle(order)
    chosen = set(order[:max_train])
    problems = [p for i, p in enumerate(problems) if i in chosen]
  return problems


def split_loaders(read: Callable[[str], Sequence[base.Problem]]
                  ) -> dict[str, Callable[[], Sequence[base.Problem]]]:
  """train / test / labelled loaders from `read(published_split)`; labelled reads train."""
  return {split: (lambda s=split: read("train" if s == "labelled" else s))
          for split in ("train", "test", "labelled")}


def register_benchmark(name: str, reward_task: str | None,
                       loaders: dict[str, Callable[[], Sequence[base.Problem]]],
                       stop_strings: Sequence[str], vocabulary: seqio.Vocabulary | None,
                       extract_answer: Callable[[str], Hashable | None],
                       max_train: int | None = None, train_seed: int = 0,
                       train_ids_file: str | None = None, reward=None,
                       score_batch=None) -> base.TaskSpec:
  """Registers a benchmark; each split is read once, on first use.

  `reward_task=None`: the benchmark has no answer key (no reward; graded by hand).
  """
  if max_train is not None and max_train <= 0:
    raise ValueError(f"max_train={max_train} must be positive (or None for all).")

  @functools.lru_cache(maxsize=None)
  def load(split: str) -> tuple[base.Problem, ...]:
    if split not in loaders:
      raise ValueError(f"task {name!r} has no split {split!r}; it has {list(loaders)}.")
    problems = loaders[split]()
    if split in ("train", "labelled"):
      problems = select_train(problems, max_train, train_seed, train_ids_file)
      if split == "labelled":
        problems = [p for p in problems if p.reference]
    return tuple(problems)

  # The reward service's reward, unless the task adapts completions first (APPS).
  if reward_task is not None:
    reward = reward or rewards.get_reward(reward_task)
    score_batch = score_batch or functools.partial(_score_batch, reward_task)

  return base.register(base.TaskSpec(
      name=name, load_split=load, splits=tuple(loaders), reward=reward,
      extract_answer=extract_answer, stop_strings=tuple(stop_strings),
      vocabulary=vocabulary if vocabulary is not None else seqio.ByteVocabulary(),
      score_batch=score_batch))


def _score_batch(reward_task: str, records, completions) -> list[float]:
  """Scores in the reward service's sandboxed process pool, in input order."""
  return rewards.score_batch(reward_task, records, completions, progress=False)
