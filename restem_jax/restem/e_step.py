"""E-step: sample N solutions per training problem from the current policy and score them.

Problems are processed in fixed shards; each finished shard is written as a
JSONL file (via a temporary file and a rename), so a resumed E-step skips
finished shards and no sample is lost or written twice. A prompt's samples
depend only on (seed, iteration, problem index), not on the shard layout.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import jax
from tqdm import tqdm

from restem_jax.checkpoint_io import files
from restem_jax.engine.engine import Engine
from restem_jax.engine.sampler import SamplingConfig
from restem_jax.restem import rewarding
from restem_jax.restem.stages import stage
from restem_jax.tasks.base import Problem, TaskSpec


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


def run_e_step(engine: Engine, task: TaskSpec, params: Any, problems: Sequence[Problem],
               sampling: SamplingConfig, *, iteration: int, seed: int, out_dir: str,
               shard_size: int) -> list[Sample]:
  """Samples and scores every problem; returns all samples in problem order."""
  files.makedirs(out_dir)
  samples: list[Sample] = []
  correct = 0
  bar = tqdm(total=len(problems), desc=f"E-step {iteration}", unit="problem",
             disable=jax.process_index() != 0)
  for start in range(0, len(problems), shard_size):
    chunk = problems[start:start + shard_size]
    shard = stage(
        os.path.join(out_dir, f"shard_{start // shard_size:05d}.jsonl"),
        lambda: _sample_shard(engine, task, params, chunk, range(start, start + len(chunk)),
                              sampling, iteration, seed),
        read=read_samples, write=write_samples)
    samples.extend(shard)
    correct += sum(s.reward > 0 for s in shard)
    bar.update(len(chunk))
    bar.set_postfix(correct=correct)
  bar.close()
  return samples


def _sample_shard(engine, task, params, problems, indices, sampling, iteration, seed):
  completions = engine.generate(params, [p.prompt for p in problems], sampling, seed,
                                prompt_ids=list(indices), stop_strings=task.stop_strings)
  flat = [(p, i, c) for p, row in zip(problems, completions) for i, c in enumerate(row)]
  rewards = rewarding.score(task, [p.record for p, _, _ in flat], [c.text for _, _, c in flat])
  return [Sample(problem_id=p.id, prompt=p.prompt, completion=c.text, reward=float(r),
                 logprob=c.logprob, iteration=iteration, sample_index=i)
          for (p, i, c), r in zip(flat, rewards)]


def read_samples(path: str) -> list[Sample]:
  return [Sample(**json.loads(line)) for line in files.read_text(path).splitlines()
          if line.strip()]


def write_samples(path: str, samples: Sequence[Sample]) -> None:
  """Writes samples as one JSONL file, atomically (process 0 only)."""
  files.write_text(path, "".join(s.to_json() + "\n" for s in samples))

