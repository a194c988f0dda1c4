"""Tasks the loop can run; importing this package registers their seqio Tasks."""

from restem_jax.tasks import pair_sum  # noqa: F401
from restem_jax.tasks import word_arithmetic  # noqa: F401  (the SmolLM2 example's task)
# The paper benchmarks: restem_math, restem_gsm8k, restem_apps, restem_humaneval, restem_bbh(_cot).
from restem_jax.tasks import benchmarks  # noqa: F401
from restem_jax.tasks.base import Problem, TaskSpec, get, load_problems, register  # noqa: F401
