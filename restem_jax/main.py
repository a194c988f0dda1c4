r"""Runs ReST^EM from gin files.

  python -m restem_jax.main --gin_file=gin_configs/demo.gin --workdir=/tmp/demo \
      [--gin_file=more.gin] [--gin.RestemConfig.iterations=2]

`--gin.NAME=VALUE` is shorthand for `--gin_bindings='NAME = VALUE'` (as in
T5X). Rerunning the same command after a kill resumes the run.
"""

from __future__ import annotations

import ctypes
import os
import sys
import traceback
from typing import Sequence

from absl import app, flags, logging

GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Gin config files; later ones override.")
BINDINGS = flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings, e.g. 'X.y = 1'.")
SEARCH_PATHS = flags.DEFINE_list(
    "gin_search_paths", [".", os.path.dirname(os.path.dirname(os.path.abspath(__file__)))],
    "Directories searched for --gin_file paths and gin includes.")
WORKDIR = flags.DEFINE_string("workdir", None, "Where every artefact of the run is written.")
VERBOSE = flags.DEFINE_bool(
    "verbose", False, "On a known error (configuration, checkpoint, data, workdir), print the "
    "traceback too; it is always written to WORKDIR/error.log.")
ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Rerun a workdir with bindings that differ from its "
    "fingerprint.json, keeping the stages made under the old ones (they are listed in the log).")
DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Run as one process of a multi-host job: call jax.distributed.initialize() first. On TPU "
    "pod slices (and Slurm, MPI, Kubernetes) the cluster is found automatically; elsewhere "
    "give --coordinator_address, --num_processes and --process_id.")
COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed: HOST:PORT of process 0's coordinator.")
NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "With --distributed: how many processes the job has.")
PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "With --distributed: this process's index, 0 to num_processes - 1.")
HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout_seconds", 100,
    "With --distributed: JAX's coordination service aborts every process once one has sent no "
    "heartbeat for this long. A process that dies stops the others at once (restem_jax/"
    "lost_host.py); this bounds the wait only for a host lost with its sockets left open "
    "(cut off from the network).")


def rewrite_gin_flags(argv: Sequence[str]) -> list[str]:
  """Turns `--gin.X=Y` into `--gin_bindings=X = Y`, which absl can parse."""
  out = []
  for arg in argv:
    if arg.startswith("--gin.") and "=" in arg:
      name, value = arg[len("--gin."):].split("=", 1)
      out.append(f"--gin_bindings={name} = {value}")
    else:
      out.append(arg)
  return out


def parse_gin(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str]) -> None:
  """Parses gin or exits with gin's own message, before any work starts."""
  import gin

  import restem_jax.tasks  # noqa: F401  (registers the seqio tasks)
  from restem_jax import configurables  # the names gin files use

  for path in search_paths:
    gin.add_config_file_search_path(path)
  try:
    gin.parse_config_files_and_bindings(list(files), list(bindings), finalize_config=True)
    configurables.validate()
  except (ValueError, KeyError, IOError, SyntaxError) as e:
    raise app.UsageError(f"bad gin configuration: {e}") from e


def initialize_distributed() -> None:
  """jax.distributed.initialize from the flags: explicit if given, else auto-detected."""
  explicit = {"--coordinator_address": COORDINATOR.value, "--num_processes": NUM_PROCESSES.value,
              "--process_id": PROCESS_ID.value}
  given = {k: v for k, v in explicit.items() if v is not None}
  if not DISTRIBUTED.value:
    if given:
      raise app.UsageError(f"{', '.join(given)} need --distributed.")
    return
  if given and len(given) != len(explicit):
    missing = [k for k in explicit if k not in given]
    raise app.UsageError(f"--distributed with {', '.join(given)} also needs {', '.join(missing)} "
                         "(or none of them, to auto-detect a TPU pod slice).")
  if given and not 0 <= PROCESS_ID.value < NUM_PROCESSES.value:
    raise app.UsageError(f"--process_id={PROCESS_ID.value} must be in [0, --num_processes="
                         f"{NUM_PROCESSES.value}).")
  import jax  # pylint: disable=import-outside-toplevel
  jax.distributed.initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value,
                             heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT.value)


def return_freed_memory() -> None:
  """Makes glibc give large freed buffers back to the OS at once.

  After the first large free glibc raises its mmap threshold (up to 32 MB)
  and from then on serves XLA's per-step buffers from a heap it keeps: on the
  SmolLM2 example the loop's RSS crept from 5.6 to 8.2 GB over the stages.
  A fixed 1 MB threshold (as MALLOC_MMAP_THRESHOLD_ would set) stopped that.
  Two arenas (MALLOC_ARENA_MAX=2): each thread that allocates (tensorstore's
  savers, the input pipeline) otherwise gets an arena of its own whose freed
  memory stays mapped; on a shortened SmolLM2 run the peak fell 5.08 -> 4.75 GB.
  """
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:  # Not glibc (e.g. macOS): nothing to tune.
    return
  m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
  libc.mallopt(m_mmap_threshold, 1 << 20)
  libc.mallopt(m_trim_threshold, 1 << 20)
  libc.mallopt(m_arena_max, 2)


def main(argv: Sequence[str]) -> None:
  return_freed_memory()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not WORKDIR.value:
    raise app.UsageError("--workdir is required: the directory for samples, checkpoints "
                         "and summary.json (rerun with the same one to resume).")
  if not GIN_FILES.value:
    raise app.UsageError("give at least one --gin_file, e.g. gin_configs/demo.gin")
  parse_gin(GIN_FILES.value, BINDINGS.value, SEARCH_PATHS.value)
  # Orbax logs every file it touches at INFO; keep the run's own log readable.
  logging.get_absl_handler().addFilter(lambda record: "/orbax/" not in record.pathname)
  import jax

  initialize_distributed()
  from restem_jax import configurables, lost_host
  from restem_jax.engine import multihost

  logging.info("devices: %s", jax.devices())
  lost_host.start_watch()
  try:
    configurables.run(WORKDIR.value, allow_config_change=ALLOW_CONFIG_CHANGE.value)
    lost_host.finish()
  except user_errors() as e:
    # Every process meets these errors together (the decisions are agreed).
    lost_host.finish()
    if VERBOSE.value:
      raise
    # gin appends the configurable it was calling on a line of its own.
    message = str(e).split("\n  In call to configurable")[0]
    print(f"error: {message}\n(traceback: {write_error_log()}; --verbose prints it)",
          file=sys.stderr, flush=True)
    sys.exit(1)
  except Exception as e:  # pylint: disable=broad-exception-caught
    lost = multihost.lost_peer(e)
    if lost is None:
      raise
    write_error_log()
    lost_host.exit_lost(lost.who, f"a collective failed: {lost.reason}")


def write_error_log() -> str:
  """Writes the exception being handled to WORKDIR/error.log; returns where (or why not)."""
  log = os.path.join(WORKDIR.value, "error.log")
  try:
    from restem_jax.checkpoint_io import files  # pylint: disable=import-outside-toplevel
    files.write_text(log, traceback.format_exc())
  except OSError:
    return "not written"
  return log


def user_errors() -> tuple[type[Exception], ...]:
  """Errors whose message says what to fix: reported in a line, not a traceback."""
  # pylint: disable=import-outside-toplevel
  from restem_jax.checkpoint_io import checkpoints, files, gguf_io, hf_config, safetensors_io
  from restem_jax.engine.config import ConfigError
  from restem_jax.restem.e_step import ScoringError
  from restem_jax.restem.workdir import WorkdirError
  from restem_jax.tasks.readers import DatasetMissingError, MalformedRecordError
  return (ConfigError, checkpoints.CheckpointError, files.DamagedFileError,
          files.WorkdirNotSharedError, WorkdirError, ScoringError, DatasetMissingError,
          MalformedRecordError,
          gguf_io.GGUFError, hf_config.UnsupportedModelError, safetensors_io.SafetensorsError)


def run() -> None:
  """Console-script entry point."""
  app.run(main, argv=rewrite_gin_flags(sys.argv))


if __name__ == "__main__":
  run()
