"""E-step: sample N solutions per training problem from the current policy and score them.

Problems are processed in fixed shards; each finished (sampled and scored)
shard is written as a JSONL file (via a temporary file and a rename) that ends
in a record of its sample count and digest, so a resumed E-step skips finished
shards, re-does a damaged one, and no sample is lost or written twice.
A prompt's samples depend only on (seed, iteration, problem index), not on
the shard layout or on which shards were already finished.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Sequence

import jax
import numpy as np
from tqdm import tqdm

from restem_jax import rewards
from restem_jax.checkpoint_io import files
from restem_jax.engine import multihost
from restem_jax.engine.engine import Completion, Engine
from restem_jax.engine.sampler import SamplingConfig
from restem_jax.tasks.base import Problem, TaskSpec


END = "_end"  # Key of a samples file's last line: {"_end": {"samples": n, "sha256": ...}}.


class ScoringError(RuntimeError):
  """A shard's rewards failed; the message names the problem and what to do."""


@dataclasses.dataclass(frozen=True)
class Sample:
  problem_id: str
  prompt: str
  completion: str
  reward: float
  logprob: float
  iteration: int
  sample_index: int

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))


@dataclasses.dataclass
class _Shard:
  path: str
  problems: Sequence[Problem]
  start: int  # Index of its first problem in the E-step's problem list.
  completions: dict[int, list[Completion]] = dataclasses.field(default_factory=dict)


def run_e_step(engine: Engine, task: TaskSpec, params: Any, problems: Sequence[Problem],
               sampling: SamplingConfig, *, iteration: int, seed: int, out_dir: str,
               shard_size: int) -> list[Sample]:
  """Samples and scores every problem; returns all samples in problem order.

  All unfinished shards' prompts go to the sampler as one stream, so it never
  waits at a shard boundary; a shard is scored in a background thread as soon
  as it and every shard before it are sampled, while the next shards sample.
  Shards are written (and counted finished) only once scored, in order, so a
  reward that fails names its shard with every shard before it saved (the
  sampler may finish a later shard first: its lanes serve any waiting
  prompt). The sampler never waits for a score until the last shard.
  """
  files.makedirs(out_dir)
  shards = [_Shard(os.path.join(out_dir, f"shard_{k:05d}.jsonl"),
                   problems[start:start + shard_size], start)
            for k, start in enumerate(range(0, len(problems), shard_size))]
  done = {s.path: samples for s in shards
          if (samples := _finished(s, sampling.num_samples)) is not None}
  bar = tqdm(total=len(problems), desc=f"E-step {iteration}", unit="problem",
             disable=jax.process_index() != 0)
  correct = 0

  def finished(shard: _Shard) -> None:
    nonlocal correct
    correct += sum(x.reward > 0 for x in done[shard.path])
    bar.update(len(shard.problems))
    bar.set_postfix(correct=correct)

  for shard in shards:
    if shard.path in done:
      finished(shard)
  todo = [s for s in shards if s.path not in done]
  owner = {i: s for s in todo for i in range(s.start, s.start + len(s.problems))}
  indices = sorted(owner)
  scoring: collections.deque[tuple[_Shard, concurrent.futures.Future]] = collections.deque()

  def write_scored(wait: bool) -> None:
    # Collectives (the reward broadcast, the write barrier) stay on this thread and
    # follow process 0's view of which shards are scored, so every process agrees.
    while scoring and multihost.agree(bool(wait or scoring[0][1].done())):
      shard, future = scoring.popleft()
      done[shard.path] = _finish(shard, future, iteration)
      finished(shard)

  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    stream = engine.stream(params, [problems[i].prompt for i in indices], sampling, seed,
                           prompt_ids=indices, stop_strings=task.stop_strings,
                           layout=[p.prompt for p in problems])
    waiting = collections.deque(todo)  # Shards not yet submitted for scoring, in order.
    for j, completions in stream:
      owner[indices[j]].completions[indices[j]] = completions
      while waiting and len(waiting[0].completions) == len(waiting[0].problems):
        shard = waiting.popleft()
        scoring.append((shard, pool.submit(_score, task, shard)))
      write_scored(wait=False)
    write_scored(wait=True)
  bar.close()
  return [sample for s in shards for sample in done[s.path]]


def _flat(shard: _Shard) -> list[tuple[Problem, int, Completion]]:
  return [(p, i, c) for k, p in enumerate(shard.problems)
          for i, c in enumerate(shard.completions[shard.start + k])]


def _score(task: TaskSpec, shard: _Shard) -> list[float] | None:
  """Process 0's rewards for a shard (None elsewhere: they arrive by broadcast)."""
  if jax.process_index() != 0:
    return None
  flat = _flat(shard)
  try:
    return task.score([p.record for p, _, _ in flat], [c.text for _, _, c in flat])
  except Exception as e:  # pylint: disable=broad-except
    raise ScoringError(f"scoring {shard.path} failed at {_culprit(task, flat, e)}: "
                       f"{type(e).__name__}: {e}. The shards before it are saved; fix the "
                       "record or the reward, then rerun to resume.") from e


def _culprit(task: TaskSpec, flat: list[tuple[Problem, int, Completion]],
             error: Exception) -> str:
  """The (problem, sample) whose reward failed, to name it in the error."""
  if isinstance(error, rewards.RewardInputError) and error.index in range(len(flat)):
    problem, i, _ = flat[error.index]
    return f"problem {problem.id!r} sample {i}"
  # Not the reward pool's error: find the first item that fails on its own.
  for problem, i, completion in flat:
    try:
      task.score([problem.record], [completion.text])
    except Exception:  # pylint: disable=broad-except
      return f"problem {problem.id!r} sample {i}"
  return "a batch whose items each score alone"


def _finish(shard: _Shard, future: concurrent.futures.Future, iteration: int) -> list[Sample]:
  """Waits for a shard's rewards, shares them with every process, and writes the shard."""
  rewards, flat = future.result(), _flat(shard)
  if multihost.is_multiprocess():
    host = np.zeros(len(flat), np.float32) if rewards is None else np.asarray(rewards, np.float32)
    rewards = [float(r) for r in multihost.agree(host).reshape(-1)]
  samples = [Sample(problem_id=p.id, prompt=p.prompt, completion=c.text, reward=float(r),
                    logprob=c.logprob, iteration=iteration, sample_index=i)
             for (p, i, c), r in zip(flat, rewards)]
  write_samples(shard.path, samples)
  multihost.sync("stage written")
  return samples


def _finished(shard: _Shard, num_samples: int) -> list[Sample] | None:
  """A shard's samples if an earlier run wrote it whole, for these problems; else None."""
  if not multihost.agree(files.exists(shard.path)):
    return None
  try:
    samples, damage = read_samples(shard.path), ""
    expected = [(p.id, i) for p in shard.problems for i in range(num_samples)]
    if [(x.problem_id, x.sample_index) for x in samples] != expected:
      damage = (f"{shard.path}: holds {len(samples)} samples, not this shard's {len(expected)} "
                "(problem, sample) pairs")
  except files.DamagedFileError as e:
    samples, damage = None, str(e)
  if multihost.agree(not damage):
    return samples
  logging.warning("%s; sampling the shard again.", damage or f"{shard.path} fails elsewhere")
  return None


def read_samples(path: str) -> list[Sample]:
  """The samples `write_samples` wrote to `path`; DamagedFileError if the file is not whole."""
  parts = files.read_text(path).split("\n")
  try:
    end = json.loads(parts[-2])[END] if len(parts) >= 2 and parts[-1] == "" else None
  except (ValueError, KeyError, TypeError):
    end = None
  if not isinstance(end, dict):
    raise files.DamagedFileError(
        f"{path}: line {len(parts) - 1}: no end record (sample count and digest): the file was "
        "cut short, or not written by restem_jax")
  body = "".join(line + "\n" for line in parts[:-2])
  if end.get("sha256") != _digest(body) or end.get("samples") != len(parts) - 2:
    raise files.DamagedFileError(f"{path}: its lines do not match its end record (count "
                                 f"{end.get('samples')} and digest): the file was altered")
  samples = []
  for number, line in enumerate(parts[:-2], 1):
    try:
      samples.append(Sample(**json.loads(line)))
    except (ValueError, TypeError) as e:
      raise files.DamagedFileError(f"{path}: line {number}: not a sample ({e})") from e
  return samples


def write_samples(path: str, samples: Sequence[Sample]) -> None:
  """Writes samples as JSONL ending in a record of their count and digest (atomically,
  synced to disk, process 0 only), so a cut or altered file is caught on reading."""
  body = "".join(s.to_json() + "\n" for s in samples)
  end = json.dumps({END: {"samples": len(samples), "sha256": _digest(body)}})
  files.write_text(path, body + end + "\n")


def _digest(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8")).hexdigest()

