"""The benchmarks, registered as seqio Tasks when `restem_jax.tasks` is imported.

  restem_math       MATH, 4-shot Minerva format        train / test / labelled (/ math500)
  restem_gsm8k      GSM8K, 8-shot chain of thought     train / test / labelled
  restem_apps       APPS introductory, few-shot        train / test / labelled
  restem_humaneval  HumanEval, 0-shot                  test
  restem_bbh_cot    BIG-Bench Hard, 3-shot CoT         test
  restem_bbh        BIG-Bench Hard, 3-shot direct      test
  restem_hungarian_exam  Hungarian finals 2023, 4-shot  test (no reward: graded by hand)

At import they read from $RESTEM_DATA_DIR (default ./data) with a byte
vocabulary; nothing is read until a split is used. A gin file (or the CLIs'
--data_dir) re-registers them through the factories with the run's data
directory and the model's vocabulary.
"""

from __future__ import annotations

from restem_jax.tasks import apps, base, bbh, gsm8k, humaneval, hungarian_exam, math

FACTORIES = {
    "restem_math": math.make_math_task,
    "restem_gsm8k": gsm8k.make_gsm8k_task,
    "restem_apps": apps.make_apps_task,
    "restem_humaneval": humaneval.make_humaneval_task,
    "restem_bbh_cot": bbh.make_bbh_cot_task,
    "restem_bbh": bbh.make_bbh_task,
    "restem_hungarian_exam": hungarian_exam.make_hungarian_exam_task,
}


def register_all(data_dir: str | None = None, vocabulary=None) -> dict[str, base.TaskSpec]:
  """(Re-)registers every benchmark reading `data_dir`; returns their specs by name."""
  return {name: factory(data_dir=data_dir, vocabulary=vocabulary)
          for name, factory in FACTORIES.items()}


def make_task(name: str, data_dir: str | None = None, vocabulary=None) -> base.TaskSpec:
  """Registers one benchmark by its seqio name (e.g. "restem_gsm8k")."""
  if name not in FACTORIES:
    raise KeyError(f"unknown benchmark {name!r}; expected one of {sorted(FACTORIES)}")
  return FACTORIES[name](data_dir=data_dir, vocabulary=vocabulary)


register_all()
