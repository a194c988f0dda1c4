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
import json
import logging
import os
import shutil
from typing import Any, Callable

import gin
import jax
import numpy as np

from restem_jax import checkpoints, e_step, files, filtering, finetune, m_step, reporting
from restem_jax import partitioning
from restem_jax.config import ModelConfig
from restem_jax.evaluation import EvalConfig, Evaluator
from restem_jax.generation import TextGenerator
from restem_jax.model import Decoder
from restem_jax.params import abstract_params, init_params
from restem_jax.sampler import SamplingConfig
from restem_jax.tasks.base import Problem, TaskSpec, load_problems
from restem_jax.trainer import OptimizerConfig, Trainer


@gin.configurable
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
  sample_batch: int = 16  # Prompts per sampler call (a batch bucket cap).
  seed: int = 0
  # Also fine-tune the base on the labelled split for the same steps (a control).
  sft_control: bool = False
  labelled_split: str = "labelled"
  # Distillation: iteration 1 trains on this kept.jsonl (e.g. a larger
  # model's) instead of sampling; prompts are text, so any tokenizer works.
  kept_from: str | None = None


@gin.configurable
def run(workdir: str, task: TaskSpec = gin.REQUIRED, model: ModelConfig = gin.REQUIRED,
        base_checkpoint: str | None = None, restem: RestemConfig = RestemConfig(),
        m_step_config: finetune.FinetuneConfig = finetune.FinetuneConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(), evaluation: EvalConfig = EvalConfig(),
        mesh_config: partitioning.MeshConfig = partitioning.MeshConfig(),
        make_base: Callable[..., Any] | None = None) -> dict[str, Any]:
  """Runs (or resumes) ReST^EM in `workdir` and returns the summary."""
  os.makedirs(workdir, exist_ok=True)
  mesh = partitioning.make_mesh(mesh_config)
  problems = _splits(task, restem)
  generator = TextGenerator(model, mesh, task.vocabulary, task.stop_strings,
                            max_prompt_len=restem.max_prompt_len, max_batch=restem.sample_batch)
  evaluator = Evaluator(task, generator, evaluation)
  trainer = Trainer(model, optimizer, mesh, mesh_config.rules)
  e_sampling = SamplingConfig(num_samples=restem.num_samples, temperature=restem.temperature,
                              top_k=restem.top_k, max_new_tokens=restem.max_new_tokens)
  val_reward = lambda params: evaluator.greedy_pass_at_1(params, problems["validation"],
                                                         "validation reward")
  base_path = base_checkpoint or os.path.join(workdir, "base")
  if not checkpoints.exists(base_path) and make_base is not None:
    make_base(base_path, trainer=trainer, vocabulary=task.vocabulary,
              labelled=problems[restem.labelled_split], val_reward=val_reward,
              workdir=os.path.join(workdir, "base_training"))
  abstract = abstract_params(Decoder(model))
  load = lambda path: checkpoints.restore(path, abstract, trainer.param_shardings)
  base = load(base_path)

  def evaluate(params: Any, iteration: int, extra: dict[str, Any]) -> dict[str, Any]:
    path = os.path.join(workdir, f"iter_{iteration}", "metrics.json")
    if os.path.exists(path):
      with open(path) as f:
        return json.load(f)
    result = {"iteration": iteration, **evaluator.evaluate(
        params, test=problems["test"], validation=problems["validation"],
        train=problems["train"], train_sampling=e_sampling), **extra}
    files.write_json(path, result)
    if jax.process_index() == 0:
      reporting.write_tensorboard(os.path.join(workdir, "tensorboard"), iteration, result)
    return result

  history = [evaluate(base, 0, {"num_kept": 0})]
  policy = base
  for i in range(1, restem.iterations + 1):
    it_dir = os.path.join(workdir, f"iter_{i}")
    ckpt = os.path.join(it_dir, "checkpoint")
    if checkpoints.exists(ckpt):
      kept = e_step.read_samples(os.path.join(it_dir, "kept.jsonl"))
    else:
      if i == 1 and restem.kept_from:
        kept = e_step.read_samples(restem.kept_from)
      else:
        samples = e_step.run_e_step(generator, task, policy, problems["train"], e_sampling,
                                    iteration=i, seed=restem.seed * 1000 + i,
                                    out_dir=os.path.join(it_dir, "samples"),
                                    shard_size=restem.shard_size)
        kept = filtering.filter_samples(samples, restem.max_per_problem, restem.drop_duplicates)
      e_step.write_samples(os.path.join(it_dir, "kept.jsonl"), kept)
      # ReST^EM restores the base checkpoint for every M-step, never the iterate.
      start = load(base_path) if restem.reset_to_base else policy
      if kept:
        result = m_step.run_m_step(trainer, start, kept, task.vocabulary, m_step_config,
                                   val_reward, os.path.join(it_dir, "m_step"), i)
      else:
        logging.warning("iteration %d kept no samples; its model is the M-step's start.", i)
        result = finetune.Result(start, 0, None, [])
      # The record goes first: an existing checkpoint marks a finished M-step.
      files.write_json(os.path.join(it_dir, "m_step.json"),
                  {"best_step": result.best_step, "best_val_reward": result.best_score,
                   "history": result.history})
      checkpoints.save(ckpt, result.params)
      _remove(os.path.join(it_dir, "m_step"))
    policy = load(ckpt)
    with open(os.path.join(it_dir, "m_step.json")) as f:
      best_step = json.load(f)["best_step"]
    extra = {"num_kept": len(kept), "kept_problems": len({s.problem_id for s in kept}),
             "m_step_best_step": best_step}
    history.append(evaluate(policy, i, extra))

  best = max(history, key=lambda m: (m["val_reward"], -m["iteration"]))["iteration"]
  extra = {"task": task.name}
  if restem.sft_control:
    extra["control"] = _sft_control(workdir, trainer, base, task, problems, restem,
                                    m_step_config, val_reward, evaluator)
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
         "test": load_problems(task.name, "test")}
  if restem.labelled_split in task.splits:
    out[restem.labelled_split] = load_problems(task.name, restem.labelled_split)
  elif restem.sft_control:
    raise ValueError(f"RestemConfig.sft_control needs a labelled split {restem.labelled_split!r}; "
                     f"task {task.name!r} has {list(task.splits)}.")
  return out


def _sft_control(workdir, trainer, base, task, problems, restem, config, val_reward, evaluator):
  """The base fine-tuned on labelled solutions with the M-step's step budget."""
  path = os.path.join(workdir, "control", "metrics.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  labelled = problems[restem.labelled_split]
  examples = finetune.tokenize(task.vocabulary, [p.prompt for p in labelled],
                               [p.reference for p in labelled], config.seq_len)
  result = finetune.finetune(trainer, base, examples, config, val_reward,
                             os.path.join(workdir, "control", "train"), desc="SFT control")
  metrics = {"test_pass@1": evaluator.greedy_pass_at_1(result.params, problems["test"]),
             "val_reward": result.best_score, "best_step": result.best_step,
             "max_steps": config.max_steps}
  files.write_json(path, metrics)
  _remove(os.path.join(workdir, "control", "train"))
  return metrics


def _remove(path: str) -> None:
  if jax.process_index() == 0 and os.path.exists(path):
    shutil.rmtree(path)


@gin.configurable
def make_base_by_sft(path: str, *, trainer: Trainer, vocabulary, labelled, val_reward, workdir,
                     config: finetune.FinetuneConfig = finetune.FinetuneConfig(),
                     optimizer: OptimizerConfig | None = None, init_seed: int = 0) -> None:
  """A base model for demos: random init, then SFT on the task's labelled split.

  `optimizer` defaults to the run's (the M-step's) optimizer.
  """
  logging.info("no base checkpoint at %s: training one on %d labelled problems", path,
               len(labelled))
  if optimizer is not None:
    trainer = Trainer(trainer.model.cfg, optimizer, trainer.mesh, trainer.rules)
  params = init_params(trainer.model, jax.random.PRNGKey(init_seed), trainer.mesh, trainer.rules)
  examples = finetune.tokenize(vocabulary, [p.prompt for p in labelled],
                               [p.reference for p in labelled], config.seq_len)
  result = finetune.finetune(trainer, params, examples, config, val_reward, workdir,
                             desc="base model")
  checkpoints.save(path, result.params)
  _remove(workdir)
