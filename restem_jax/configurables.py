"""The one place gin meets the library: the names gin files use, and what they build.

Library classes and functions know nothing of gin. Here each configuration
dataclass is registered under its class name (`ModelConfig.num_layers = 2`,
`run.model = @ModelConfig()`), as are the task factories and base-model
recipes that gin files reference, and `run`, which turns the bound
configuration into one `Engine` and hands it to the loop. `SamplingConfig` is
deliberately absent: E-step and evaluation sampling follow from
`RestemConfig` and `EvalConfig`, so a stray binding is an error, not a silent
change.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import gin

from restem_jax import convert
from restem_jax.checkpoint_io import files, smollm2_gguf_path
from restem_jax.engine.config import ModelConfig, check_types
from restem_jax.engine.engine import Engine
from restem_jax.engine.partitioning import MeshConfig, make_mesh
from restem_jax.engine.trainer import OptimizerConfig
from restem_jax.restem import loop, rewarding
from restem_jax.restem import workdir as workdir_lib
from restem_jax.restem.evaluation import EvalConfig
from restem_jax.restem.finetune import FinetuneConfig
from restem_jax.restem.loop import RestemConfig
from restem_jax.tasks import apps, common, gsm8k, humaneval, math, pair_sum, word_arithmetic

CONFIG_CLASSES = (ModelConfig, MeshConfig, OptimizerConfig, FinetuneConfig, RestemConfig,
                  EvalConfig)


def _constructor(cls: type) -> Callable[..., Any]:
  """A plain function building `cls`: gin then injects bindings without subclassing it."""
  def build(**kwargs):
    check_types(cls, kwargs)  # Before __post_init__ compares them.
    return cls(**kwargs)
  build.__signature__ = inspect.signature(cls)
  build.__name__ = build.__qualname__ = cls.__name__
  build.__doc__ = cls.__doc__
  return build


for _cls in CONFIG_CLASSES:
  gin.external_configurable(_constructor(_cls), name=_cls.__name__, module="restem_jax")
for _fn in (loop.make_base_by_sft, convert.base_from_pretrained, smollm2_gguf_path,
            common.task_vocabulary, pair_sum.make_demo_task, math.make_math_task,
            gsm8k.make_gsm8k_task, apps.make_apps_task, humaneval.make_humaneval_task,
            word_arithmetic.make_word_arithmetic_task):
  gin.external_configurable(_fn, name=_fn.__name__, module="restem_jax")


def build(configurable: type | Callable[..., Any]) -> Any:
  """Calls a registered class or function with the current gin bindings."""
  return gin.get_configurable(configurable.__name__)()


# Placement and speed only: a run's samples depend on (seed, problem, sample
# index), not on slots or mesh (tests/test_sampler.py, tests/test_sharding.py).
# FinetuneConfig.grad_accum_steps is of the same kind: each step still updates on
# FinetuneConfig.batch_size rows (the effective batch), with the loss and gradient of the
# whole batch; only float rounding differs, as it does between meshes, which already
# change freely. The train state has the same shape either way, so a run that ran out
# of memory resumes mid M-step with more microbatches, without --allow_config_change.
NOT_RESULTS = ("MeshConfig.", "RestemConfig.sample_batch", "ModelConfig.remat",
               "ModelConfig.scan_unroll", "FinetuneConfig.grad_accum_steps")


def result_bindings() -> dict[str, str]:
  """Every gin binding that can change a run's results, as {"Class.param": repr(value)}."""
  out = {}
  for (scope, selector), params in gin.config._CONFIG.items():  # pylint: disable=protected-access
    name = selector.rsplit(".", 1)[-1]
    for param, value in params.items():
      key = scope if name == "macro" else f"{scope + '/' if scope else ''}{name}.{param}"
      # Scoped too: base/FinetuneConfig.grad_accum_steps is placement as the unscoped one.
      if not key.rsplit("/", 1)[-1].startswith(NOT_RESULTS):
        out[key] = repr(value)
  return dict(sorted(out.items()))


def validate() -> None:
  """Builds every configuration class from the bindings: a wrong type or range fails
  here, naming the binding, before any data, model or workdir is touched."""
  for cls in CONFIG_CLASSES:
    build(cls)


def make_engine(model: ModelConfig, vocabulary, mesh_config: MeshConfig,
                restem: RestemConfig) -> Engine:
  """The run's one engine: the mesh and rules of `mesh_config`, the sampler limits of `restem`."""
  return Engine(model, vocabulary, make_mesh(mesh_config), mesh_config.rules,
                max_prompt_len=restem.max_prompt_len, sample_batch=restem.sample_batch,
                sample_tensor=mesh_config.sample_tensor)


@gin.configurable(module="restem_jax", denylist=["allow_config_change"])
def run(workdir: str, task=gin.REQUIRED, model: ModelConfig = gin.REQUIRED,
        base_checkpoint: str | None = None, restem: RestemConfig | None = None,
        m_step_config: FinetuneConfig | None = None, optimizer: OptimizerConfig | None = None,
        evaluation: EvalConfig | None = None, mesh_config: MeshConfig | None = None,
        make_base: Callable[..., Any] | None = None, allow_unsandboxed: bool = False,
        allow_config_change: bool = False) -> dict[str, Any]:
  """ReST^EM as the gin files describe it (`run.task`, `run.model`, ...).

  A configuration not bound on `run` is built from its class's own bindings,
  so `--gin.MeshConfig.fsdp=4` works whether or not a file binds `run.mesh_config`.
  The workdir is locked for the run and refuses another configuration's
  rerun unless `allow_config_change` (see `restem.workdir`).
  `allow_unsandboxed`: code rewards run model-written programs even where no
  sandbox backend works, instead of refusing at the start. As a binding it is
  recorded in fingerprint.json, and every start with it logs a warning.
  """
  rewarding.prepare(task, allow_unsandboxed)
  restem = restem or build(RestemConfig)
  mesh_config = mesh_config or build(MeshConfig)
  m_step_config = m_step_config or build(FinetuneConfig)
  optimizer = optimizer or build(OptimizerConfig)
  evaluation = evaluation or build(EvalConfig)
  files.makedirs(workdir)
  with workdir_lib.lock(workdir):
    workdir_lib.check_config(workdir, result_bindings(), gin.config_str(), allow_config_change)
    engine = make_engine(model, task.vocabulary, mesh_config, restem)
    return loop.run(workdir, engine, task, restem, m_step_config, optimizer, evaluation,
                    base_checkpoint, make_base)


def transfer_setup() -> tuple[Engine, EvalConfig]:
  """For `restem_jax.transfer`: the engine (model, `task_vocabulary`, mesh, sampler limits)
  and the evaluation protocol, from the gin files."""
  engine = make_engine(build(ModelConfig), build(common.task_vocabulary), build(MeshConfig),
                       build(RestemConfig))
  return engine, build(EvalConfig)
