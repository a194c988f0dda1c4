"""M-step: fine-tune on one iteration's kept samples, early-stopped on validation reward."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import seqio

from restem_jax import finetune
from restem_jax.e_step import Sample
from restem_jax.trainer import Trainer


def run_m_step(trainer: Trainer, start_params: Any, kept: Sequence[Sample],
               vocabulary: seqio.Vocabulary, config: finetune.FinetuneConfig,
               val_reward: Callable[[Any], float], workdir: str, iteration: int
               ) -> finetune.Result:
  """Maximises E[r log p(y|x)] over `kept` from `start_params` (the base, in ReST^EM).

  Input is the prompt (few-shot prefix + question); the loss covers the
  completion tokens only, each weighted by its sample's reward.
  """
  examples = finetune.tokenize(vocabulary, [s.prompt for s in kept], [s.completion for s in kept],
                               config.seq_len, rewards=[s.reward for s in kept])
  return finetune.finetune(trainer, start_params, examples, config, val_reward, workdir,
                           desc=f"M-step {iteration}")
