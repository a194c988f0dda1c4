"""Fine-tuning on (prompt, target) pairs with early stopping, resumable after a kill.

Used by the M-step (kept samples), by the base-model recipe and by the SFT
control (labelled solutions). Batches depend only on (seed, step), and the
train state is checkpointed at every evaluation, so a resumed run replays the
same steps and reaches the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np
from tqdm import tqdm

from restem_jax.checkpoint_io import checkpoints, files
from restem_jax.engine import multihost
from restem_jax.engine.config import ConfigError, at_least
from restem_jax.engine.engine import Engine
from restem_jax.engine.trainer import Batch, Examples, Trainer


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """The paper states no batch size or step count; these are project defaults."""
  batch_size: int = 32  # Rows per optimizer step: the effective batch.
  max_steps: int = 1000
  eval_every: int = 100  # Validation reward is checked (and a checkpoint kept) this often.
  patience: int = 3  # Stop after this many checks without improvement; 0 = run max_steps.
  seq_len: int = 512  # Prompt + target tokens; longer examples are dropped with a warning.
  seed: int = 0
  # Each step's batch_size rows go through the model as this many microbatches of
  # batch_size / grad_accum_steps rows, their gradients summed before the one update: the
  # same loss and gradient as the whole batch (up to float rounding) in a microbatch's
  # activation memory. `python -m restem_jax.plan` suggests one when the batch does not fit.
  grad_accum_steps: int = 1

  def __post_init__(self):
    at_least(self, batch_size=1, patience=0, seq_len=2, grad_accum_steps=1)
    if self.eval_every < 1 or self.max_steps < self.eval_every:
      raise ValueError(f"FinetuneConfig: need 1 <= eval_every ({self.eval_every}) <= max_steps "
                       f"({self.max_steps}).")
    if self.batch_size % self.grad_accum_steps:
      divisors = [d for d in range(1, self.batch_size + 1) if self.batch_size % d == 0]
      raise ConfigError(
          f"FinetuneConfig.batch_size={self.batch_size} is not divisible by "
          f"FinetuneConfig.grad_accum_steps={self.grad_accum_steps}: a step splits its batch "
          f"into grad_accum_steps microbatches of equal size. Set grad_accum_steps to one of "
          f"{divisors}, or batch_size to a multiple of {self.grad_accum_steps}.")

  @property
  def microbatch_size(self) -> int:
    """Rows the model sees at once: batch_size / grad_accum_steps."""
    return self.batch_size // self.grad_accum_steps


def tokenize(engine: Engine, prompts: Sequence[str], targets: Sequence[str], seq_len: int,
             rewards: Sequence[float] | None = None) -> Examples:
  """The engine's training rows (prompt the model's way, target + EOS), warning on drops."""
  examples, dropped = engine.examples(prompts, targets, seq_len, rewards)
  if dropped:
    logging.warning("dropped %d of %d examples longer than seq_len=%d; raise "
                    "FinetuneConfig.seq_len to keep them.", dropped, len(prompts), seq_len)
  return examples


def batch_at(examples: Examples, step: int, batch_size: int, seed: int) -> Batch:
  """The batch of `step`: epochs are seeded permutations, so any step can be rebuilt."""
  n = len(examples.tokens)
  positions = np.arange(step * batch_size, (step + 1) * batch_size)
  epochs = positions // n
  index = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    order = np.random.default_rng([seed, int(epoch)]).permutation(n)
    mask = epochs == epoch
    index[mask] = order[positions[mask] % n]
  return {field: getattr(examples, field)[index] for field in Examples._fields}


class Result(NamedTuple):
  params: Any
  best_step: int
  best_score: float
  history: list[dict[str, float]]


def finetune(trainer: Trainer, start: Callable[[], Any], examples: Examples,
             config: FinetuneConfig, score: Callable[[Any], float], workdir: str,
             desc: str = "fine-tune") -> Result:
  """Trains from the parameters `start()` loads, keeping those of the best-scoring check.

  `start` is called only when there is no train state to resume, and its
  parameters are donated to the train state: one set of parameters and
  optimizer state is alive while training, whether fresh or resumed.
  """
  if len(examples.tokens) == 0:
    raise ValueError(f"{desc}: no training examples (nothing was kept or all were too long).")
  if trainer.grad_accum_steps != config.grad_accum_steps:
    raise ValueError(f"{desc}: the trainer splits a batch into {trainer.grad_accum_steps} "
                     f"microbatches, FinetuneConfig.grad_accum_steps says "
                     f"{config.grad_accum_steps}: build it with Engine.trainer(optimizer, "
                     "config.grad_accum_steps).")
  files.makedirs(workdir)
  progress_path = os.path.join(workdir, "progress.json")
  progress = {"step": 0, "best_step": 0, "best_score": -np.inf, "history": [], "done": False}
  if multihost.agree(files.exists(progress_path)):
    progress = files.read_json(progress_path)
  state = None  # A finished run only reads its best parameters.
  if progress["step"] and not progress["done"]:
    state = checkpoints.restore(os.path.join(workdir, f"state_{progress['step']}"),
                                trainer.abstract_state(), trainer.state_shardings)
  elif not progress["done"]:
    state = trainer.init_state(start(), donate=True)
  bar = tqdm(total=config.max_steps, initial=progress["step"], desc=desc, unit="step",
             disable=jax.process_index() != 0)
  bad_checks = sum(1 for h in progress["history"] if h["step"] > progress["best_step"])
  step = progress["step"]
  while not progress["done"]:
    state, metrics = trainer.step(state, batch_at(examples, step, config.batch_size, config.seed))
    step += 1
    bar.update(1)
    bar.set_postfix(loss=f"{metrics['loss']:.4f}")
    if step % config.eval_every and step < config.max_steps:
      continue
    value = score(state.params)
    progress["history"].append({"step": step, "score": value, "loss": metrics["loss"]})
    if value > progress["best_score"]:
      progress.update(best_step=step, best_score=value)
      checkpoints.save(os.path.join(workdir, f"best_{step}"), state.params)
      bad_checks = 0
    else:
      bad_checks += 1
    progress["step"] = step
    progress["done"] = step >= config.max_steps or bool(config.patience and bad_checks >= config.patience)
    if not progress["done"]:  # A finished run resumes from its best parameters alone.
      checkpoints.save(os.path.join(workdir, f"state_{step}"), state)
    files.write_json(progress_path, progress)
    _remove_stale(workdir, keep={f"state_{step}", f"best_{progress['best_step']}"})
  bar.close()
  state = None  # Freed before the best parameters are read, not after.
  best = checkpoints.restore(os.path.join(workdir, f"best_{progress['best_step']}"),
                             trainer.abstract_state().params, trainer.param_shardings)
  return Result(best, progress["best_step"], progress["best_score"], progress["history"])


def _remove_stale(workdir: str, keep: set[str]) -> None:
  if jax.process_index() != 0:
    return
  for name in files.listdir(workdir):
    if name.startswith(("state_", "best_")) and name not in keep and not name.endswith(".tmp"):
      files.remove_tree(os.path.join(workdir, name))
