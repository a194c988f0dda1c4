"""ReST^EM, Algorithm 1: evaluate the base, then E-step, filter, M-step, evaluate.

Every stage leaves a durable file under the workdir before the next begins:

  base/                      base parameters (Orbax); made by the recipe if absent
  iter_0/metrics.json        evaluation of the base
  iter_i/samples/*.jsonl     E-step shards (every sample, scored)
  iter_i/kept.jsonl          the filtered set the M-step trains on
  iter_i/m_step/             M-step train state and best checkpoint, per check
  iter_i/checkpoint/         the iteration's fine-tuned parameters
  iter_i/metrics.json        its evaluation
  control/                   optional SFT control with the same extra steps
  summary.json, pass_at_1.png, tensorboard/

A rerun after a kill skips whatever exists and resumes the stage in flight.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable

import jax
import numpy as np

from restem_jax.checkpoint_io import checkpoints, files
from restem_jax.engine.config import at_least
from restem_jax.engine.engine import Engine
from restem_jax.engine.sampler import SamplingConfig
from restem_jax.engine.trainer import OptimizerConfig, Trainer
from restem_jax.restem import e_step, filtering, finetune, m_step, reporting
from restem_jax.restem.evaluation import EvalConfig, Evaluator
from restem_jax.restem.stages import stage
from restem_jax.tasks.base import Problem, TaskSpec, load_problems


@dataclasses.dataclass(frozen=True)
class RestemConfig:
  """Algorithm 1's knobs. Defaults are the paper's MATH run where it states them."""
  iterations: int = 3  # Paper: 3 on MATH, 2 on APPS.
  num_samples: int = 32  # Paper: 32 per problem on MATH, 64 on APPS.
  temperature: float = 0.7  # Paper: E-step T=0.7, top-k 40, no top-p.
  top_k: int = 40
  max_new_tokens: int = 512  # Not stated in the paper; project default.
  max_per_problem: int = 10  # Paper: at most 10 correct solutions per problem.
  drop_duplicates: bool = False  # Off, as in the paper (it does not dedupe).
  reset_to_base: bool = True  # False gives the ReST ablation (continue from iterate).
  # The paper's D_val is not described: a held-out slice of train, this size and seed.
  val_size: int = 256
  val_seed: int = 0
  shard_size: int = 64  # Problems per durable E-step shard.
  max_prompt_len: int = 1024
  sample_batch: int = 16  # Each data-parallel group of the sampling mesh (a chip, or a
  # tensor-parallel group) decodes 4 x sample_batch samples at once, of any resident
  # prompts, over slots for the prompts those samples need and as many prefilled ahead
  # (of long prompts, one prefill's worth). `plan` gives the largest.
  seed: int = 0
  # Also fine-tune the base on the labelled split for the same steps (a control).
  sft_control: bool = False
  labelled_split: str = "labelled"
  # The split every evaluation reports as test (e.g. "math500" for MATH-500).
  test_split: str = "test"
  # Distillation: iteration 1 trains on this kept.jsonl (e.g. a larger
  # model's) instead of sampling; prompts are text, so any tokenizer works.
  kept_from: str | None = None

  def __post_init__(self):
    at_least(self, iterations=0, num_samples=1, temperature=0.0, top_k=0, max_new_tokens=1,
             max_per_problem=1, val_size=1, shard_size=1, max_prompt_len=1, sample_batch=1)


def run(workdir: str, engine: Engine, task: TaskSpec, restem: RestemConfig,
        m_step_config: finetune.FinetuneConfig, optimizer: OptimizerConfig,
        evaluation: EvalConfig, base_checkpoint: str | None = None,
        make_base: Callable[..., Any] | None = None) -> dict[str, Any]:
  """Runs (or resumes) ReST^EM in `workdir` and returns the summary.

  `engine` is built once by the caller (its vocabulary is the task's); every
  stage below samples, scores and trains through it.
  """
  files.makedirs(workdir)
  files.check_shared(workdir)
  problems = _splits(task, restem)
  evaluator = Evaluator(task, engine, evaluation)
  # The M-step's and the SFT control's: FinetuneConfig.grad_accum_steps microbatches a step.
  trainer = engine.trainer(optimizer, m_step_config.grad_accum_steps)
  e_sampling = SamplingConfig(num_samples=restem.num_samples, temperature=restem.temperature,
                              top_k=restem.top_k, max_new_tokens=restem.max_new_tokens)
  val_reward = lambda params: evaluator.greedy_pass_at_1(params, problems["validation"],
                                                         "validation reward")
  if base_checkpoint and not checkpoints.exists(base_checkpoint):
    raise checkpoints.CheckpointError(
        f"run.base_checkpoint={base_checkpoint!r} names no checkpoint (expected "
        f"{base_checkpoint}/params): check the path. A base is made only when none is named "
        "(run.base_checkpoint = None makes it in WORKDIR/base).")
  base_path = base_checkpoint or os.path.join(workdir, "base")
  if not checkpoints.exists(base_path) and make_base is not None:
    make_base(base_path, engine=engine, trainer=trainer,
              labelled=problems.get(restem.labelled_split, []),
              val_reward=val_reward, workdir=os.path.join(workdir, "base_training"))
  load_base = lambda: engine.restore(base_path)

  def evaluate(params: Any, iteration: int, extra: dict[str, Any],
               val_reward: float | None = None) -> dict[str, Any]:
    def compute():
      result = {"iteration": iteration, **evaluator.evaluate(
          params, test=problems["test"], validation=problems["validation"],
          train=problems["train"], train_sampling=e_sampling, val_reward=val_reward), **extra}
      if jax.process_index() == 0:
        reporting.write_tensorboard(os.path.join(workdir, "tensorboard"), iteration, result)
      return result
    return stage(os.path.join(workdir, f"iter_{iteration}", "metrics.json"), compute)

  def sample_and_filter(policy: Any, i: int, it_dir: str) -> list[e_step.Sample]:
    if i == 1 and restem.kept_from:  # Distillation: another model's kept set.
      return e_step.read_samples(restem.kept_from)
    samples = e_step.run_e_step(engine, task, policy, problems["train"], e_sampling,
                                iteration=i, seed=restem.seed * 1000 + i,
                                out_dir=os.path.join(it_dir, "samples"),
                                shard_size=restem.shard_size)
    return filtering.filter_samples(samples, restem.max_per_problem, restem.drop_duplicates)

  def fine_tune(kept: list[e_step.Sample], i: int, it_dir: str, start_path: str) -> Any:
    # The start is read from its checkpoint, not kept from the E-step, so the
    # train state owns the only parameters alive during the M-step.
    start = lambda: engine.restore(start_path)
    if kept:
      result = m_step.run_m_step(engine, trainer, start, kept, m_step_config, val_reward,
                                 os.path.join(it_dir, "m_step"), i)
    else:
      logging.warning("iteration %d kept no samples; its model is the M-step's start.", i)
      result = finetune.Result(start(), 0, None, [])
    # The record goes first: an existing checkpoint marks a finished M-step.
    files.write_json(os.path.join(it_dir, "m_step.json"),
                     {"best_step": result.best_step, "best_val_reward": result.best_score,
                      "history": result.history})
    return result.params

  def save_iterate(path: str, params: Any) -> None:
    engine.save(path, params)
    _remove(os.path.join(os.path.dirname(path), "m_step"))

  # Algorithm 1: evaluate the base; then, per iteration, E-step, filter, M-step, evaluate.
  policy, policy_path = load_base(), base_path
  history = [evaluate(policy, 0, {"num_kept": 0})]
  for i in range(1, restem.iterations + 1):
    it_dir = os.path.join(workdir, f"iter_{i}")
    kept = stage(os.path.join(it_dir, "kept.jsonl"), lambda: sample_and_filter(policy, i, it_dir),
                 read=e_step.read_samples, write=e_step.write_samples)
    # ReST^EM starts every M-step from the base, never the iterate (the ReST
    # ablation continues from it).
    start_path = base_path if restem.reset_to_base else policy_path
    policy = None
    policy = stage(os.path.join(it_dir, "checkpoint"),
                   lambda: fine_tune(kept, i, it_dir, start_path),
                   read=engine.restore, write=save_iterate, exists=checkpoints.exists)
    policy_path = os.path.join(it_dir, "checkpoint")
    m_step_record = files.read_json(os.path.join(it_dir, "m_step.json"))
    history.append(evaluate(policy, i, {
        "num_kept": len(kept), "kept_problems": len({s.problem_id for s in kept}),
        "m_step_best_step": m_step_record["best_step"]}, m_step_record["best_val_reward"]))

  policy = None
  best = max(history, key=lambda m: (m["val_reward"], -m["iteration"]))["iteration"]
  extra = {"task": task.name}
  if restem.sft_control:
    extra["control"] = stage(
        os.path.join(workdir, "control", "metrics.json"),
        lambda: _sft_control(workdir, engine, trainer, load_base, problems, restem,
                             m_step_config, val_reward, evaluator))
    _remove(os.path.join(workdir, "control", "train"))
  control = extra.get("control", {}).get("test_pass@1")
  summary = history
  if jax.process_index() == 0:
    reporting.plot_pass_at_1(os.path.join(workdir, "pass_at_1.png"), history, control)
    summary = reporting.write_summary(os.path.join(workdir, "summary.json"), history, best, extra)
    print(reporting.table(history, control), flush=True)
    print(f"best iteration by validation reward: {best}", flush=True)
  return summary


def _splits(task: TaskSpec, restem: RestemConfig) -> dict[str, list[Problem]]:
  """train minus a seeded validation slice, validation, test, and the labelled split."""
  train = load_problems(task.name, "train")
  if restem.val_size >= len(train):
    raise ValueError(f"RestemConfig.val_size={restem.val_size} leaves no training problems "
                     f"(train has {len(train)}); lower it.")
  held = set(np.random.default_rng(restem.val_seed).permutation(len(train))[:restem.val_size])
  out = {"train": [p for i, p in enumerate(train) if i not in held],
         "validation": [p for i, p in enumerate(train) if i in held],
         "test": load_problems(task.name, restem.test_split)}
  if restem.labelled_split in task.splits:
    out[restem.labelled_split] = load_problems(task.name, restem.labelled_split)
  elif restem.sft_control:
    raise ValueError(f"RestemConfig.sft_control needs a labelled split {restem.labelled_split!r}; "
                     f"task {task.name!r} has {list(task.splits)}.")
  return out


def _sft_control(workdir, engine, trainer, load_base, problems, restem, config, val_reward,
                 evaluator) -> dict[str, Any]:
  """The base fine-tuned on labelled solutions with the M-step's step budget."""
  labelled = problems[restem.labelled_split]
  examples = finetune.tokenize(engine, [p.prompt for p in labelled],
                               [p.reference for p in labelled], config.seq_len)
  result = finetune.finetune(trainer, load_base, examples, config, val_reward,
                             os.path.join(workdir, "control", "train"), desc="SFT control")
  metrics = {"test_pass@1": evaluator.greedy_pass_at_1(result.params, problems["test"]),
             "val_reward": result.best_score, "best_step": result.best_step,
             "max_steps": config.max_steps}
  return metrics


def _remove(path: str) -> None:
  files.remove_tree(path)


def make_base_by_sft(path: str, *, engine: Engine, trainer: Trainer, labelled, val_reward,
                     workdir: str, config: finetune.FinetuneConfig = finetune.FinetuneConfig(),
                     optimizer: OptimizerConfig | None = None, init_seed: int = 0) -> None:
  """A base model for demos: random init, then SFT on the task's labelled split.

  `optimizer` defaults to the run's (the M-step's) optimizer; `config.grad_accum_steps`
  applies here as in the M-step.
  """
  if not labelled:
    raise ValueError("make_base_by_sft trains the base on the task's labelled split, but the "
                     "task has none (or it is empty); give run.base_checkpoint instead.")
  logging.info("no base checkpoint at %s: training one on %d labelled problems", path,
               len(labelled))
  if optimizer is not None or config.grad_accum_steps != trainer.grad_accum_steps:
    trainer = engine.trainer(optimizer or trainer.optimizer_config, config.grad_accum_steps)
  examples = finetune.tokenize(engine, [p.prompt for p in labelled],
                               [p.reference for p in labelled], config.seq_len)
  result = finetune.finetune(trainer, lambda: engine.init_params(init_seed), examples, config,
                             val_reward, workdir, desc="base model")
  engine.save(path, result.params)
  _remove(workdir)
