"""Per-iteration evaluation: greedy pass@1, sampled pass@k, maj@k, train solve rate."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from restem_jax.restem import metrics, rewarding
from restem_jax.engine.config import ConfigError, at_least
from restem_jax.engine.engine import Engine
from restem_jax.engine.sampler import SamplingConfig
from restem_jax.tasks.base import Problem, TaskSpec


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Evaluation settings; the paper's pass@k protocol is T=1.0, top-p 0.95."""
  pass_k_samples: int = 64  # n of the unbiased estimator; paper: up to 64.
  pass_ks: tuple[int, ...] = (1, 4, 16, 64)
  maj_ks: tuple[int, ...] = (64,)  # Paper: maj@64 on MATH.
  pass_temperature: float = 1.0
  pass_top_p: float = 0.95
  # The train solve rate is measured on this many training problems, sampled
  # at the E-step's temperature (project default; the paper plots all of train).
  train_eval_size: int = 256
  train_eval_samples: int = 4
  max_new_tokens: int = 256
  seed: int = 1234

  def __post_init__(self):
    at_least(self, pass_k_samples=1, pass_temperature=0.0, train_eval_size=0,
             train_eval_samples=1, max_new_tokens=1)
    if not 0 < self.pass_top_p <= 1:
      raise ConfigError(f"EvalConfig.pass_top_p={self.pass_top_p} must be in (0, 1].")
    if any(k < 1 for k in tuple(self.pass_ks) + tuple(self.maj_ks)):
      raise ConfigError(f"EvalConfig: every k in pass_ks={self.pass_ks} and "
                        f"maj_ks={self.maj_ks} must be >= 1.")
    for k in tuple(self.pass_ks) + tuple(self.maj_ks):
      if k > self.pass_k_samples:
        raise ValueError(f"EvalConfig: k={k} exceeds pass_k_samples={self.pass_k_samples}; "
                         "raise pass_k_samples or drop that k.")


class Evaluator:
  """Scores a policy on a task; every number is reproducible from EvalConfig.seed."""

  def __init__(self, task: TaskSpec, engine: Engine, config: EvalConfig):
    self.task, self.engine, self.config = task, engine, config

  def _generate(self, params: Any, problems: Sequence[Problem], sampling: SamplingConfig,
                seed: int, desc: str | None):
    return self.engine.generate(params, [p.prompt for p in problems], sampling, seed,
                                range(len(problems)), self.task.stop_strings, desc)

  def rewards(self, params: Any, problems: Sequence[Problem], sampling: SamplingConfig,
              seed: int, desc: str | None = None) -> np.ndarray:
    """Every sample's reward, [problems, samples]."""
    if not problems:
      return np.zeros((0, sampling.num_samples))
    completions = self._generate(params, problems, sampling, seed, desc)
    records = [p.record for p, row in zip(problems, completions) for _ in row]
    rewards = rewarding.score(self.task, records, [c.text for row in completions for c in row])
    return np.asarray(rewards, np.float64).reshape(len(problems), -1)

  def mean_reward(self, params: Any, problems: Sequence[Problem], sampling: SamplingConfig,
                  seed: int, desc: str | None = None) -> float:
    """Mean reward over every sample of every problem (greedy: one per problem)."""
    rewards = self.rewards(params, problems, sampling, seed, desc)
    return _mean(rewards)

  def greedy_rewards(self, params: Any, problems: Sequence[Problem],
                     desc: str | None = None) -> np.ndarray:
    """Each problem's greedy reward."""
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=self.config.max_new_tokens)
    return self.rewards(params, problems, greedy, self.config.seed, desc)[:, 0]

  def greedy_pass_at_1(self, params: Any, problems: Sequence[Problem],
                       desc: str | None = None) -> float:
    rewards = self.greedy_rewards(params, problems, desc)
    return _mean(rewards)

  def evaluate(self, params: Any, *, test: Sequence[Problem], validation: Sequence[Problem],
               train: Sequence[Problem], train_sampling: SamplingConfig,
               val_reward: float | None = None) -> dict[str, Any]:
    """All metrics of `params`; `val_reward`, when its M-step's best check already
    measured these params on `validation`, is taken as is (greedy: the same number)."""
    cfg = self.config
    if val_reward is None:
      val_reward = self.greedy_pass_at_1(params, validation, "eval: validation")
    greedy = self.greedy_rewards(params, test, "eval: test greedy")
    result = {"test_pass@1": _mean(greedy),
              "val_reward": val_reward}
    if test and "subtask" in test[0].record:  # BIG-Bench Hard: its subtasks and their mean.
      result.update(metrics.subtask_metrics([p.record["subtask"] for p in test], greedy))
    if test and "level" in test[0].record:  # MATH: gains by difficulty, as the paper plots.
      result["test_pass@1_by_level"] = metrics.mean_by(
          [str(p.record["level"]) for p in test], greedy)
    result.update(self._sampled(params, test))
    solve = dataclasses.replace(train_sampling, num_samples=cfg.train_eval_samples,
                                max_new_tokens=cfg.max_new_tokens)
    result["train_solve_rate"] = self.mean_reward(params, train[:cfg.train_eval_size], solve,
                                                  cfg.seed + 1, "eval: train solve rate")
    return result

  def _sampled(self, params: Any, problems: Sequence[Problem]) -> dict[str, Any]:
    cfg = self.config
    sampling = SamplingConfig(num_samples=cfg.pass_k_samples, temperature=cfg.pass_temperature,
                              top_k=0, top_p=cfg.pass_top_p, max_new_tokens=cfg.max_new_tokens)
    completions = self._generate(params, problems, sampling, cfg.seed + 2,
                                 f"eval: test pass@{cfg.pass_k_samples}")
    texts = [[c.text for c in row] for row in completions]
    records = [p.record for p, row in zip(problems, texts) for _ in row]
    rewards = rewarding.score(self.task, records, [t for row in texts for t in row])
    per_problem = np.asarray(rewards).reshape(len(problems), cfg.pass_k_samples)
    correct = per_problem.sum(axis=1).astype(int)
    # Every k up to the samples drawn, for the pass@k curve: the same draws, no more sampling.
    curve = [float(np.mean([metrics.pass_at_k(cfg.pass_k_samples, c, k) for c in correct]))
             for k in range(1, cfg.pass_k_samples + 1)]
    pass_k = {str(k): curve[k - 1] for k in cfg.pass_ks}
    maj_k = {}
    for k in cfg.maj_ks:
      wins = []
      for problem, row, row_rewards in zip(problems, texts, per_problem):
        answers = [self.task.extract_answer(t) for t in row[:k]]
        vote = metrics.majority_vote(answers)
        # The voted answer is right if any sample that gave it was rewarded.
        wins.append(float(any(a == vote and r > 0 for a, r in zip(answers, row_rewards[:k]))
                          if vote is not None else 0.0))
      maj_k[str(k)] = float(np.mean(wins))
    return {"pass@k": pass_k, "maj@k": maj_k, "pass@k_curve": curve}


def _mean(rewards: np.ndarray) -> float:
  """Mean reward, 0 where there is none (an empty split)."""
  return float(np.mean(rewards)) if rewards.size else 0.0
