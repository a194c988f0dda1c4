"""M-step: fine-tune on one iteration's kept samples, early-stopped on validation reward."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from restem_jax.engine.engine import Engine
from restem_jax.engine.trainer import Trainer
from restem_jax.restem import finetune
from restem_jax.restem.e_step import Sample


def run_m_step(engine: Engine, trainer: Trainer, start: Callable[[], Any], kept: Sequence[Sample],
               config: finetune.FinetuneConfig, val_reward: Callable[[Any], float],
               workdir: str, iteration: int) -> finetune.Result:
  """Maximises E[r log p(y|x)] over `kept` from the parameters `start()` loads.

  In ReST^EM `start` restores the base; `finetune` calls it only when there
  is no train state to resume, and donates what it returns to the train state.

  Input is the prompt (few-shot prefix + question), encoded the model's way;
  the loss covers the completion tokens only, each weighted by its sample's reward.
  """
  examples = finetune.tokenize(engine, [s.prompt for s in kept], [s.completion for s in kept],
                               config.seq_len, rewards=[s.reward for s in kept])
  return finetune.finetune(trainer, start, examples, config, val_reward, workdir,
                           desc=f"M-step {iteration}")
