"""A scoring worker process: `python -m restem_jax.rewards.worker`.

Started by batch.RewardPool as a plain subprocess (not multiprocessing) so it
never re-imports the caller's __main__ (which may import jax). It scores one
item at a time and may be SIGKILLed at any moment by the pool, which is how a
hung sympy call or a stuck harness is bounded.

Protocol on stdin/stdout: framing.py frames, in lock step. Untrusted programs
only ever run inside the sandbox this worker owns.
"""

from __future__ import annotations

import os
import sys

from restem_jax.rewards import scoring
from restem_jax.rewards.framing import read_frame, write_frame
from restem_jax.rewards.sandbox import Sandbox, SandboxError, SandboxLimits


def main() -> None:
  config = read_frame(0)
  limits: SandboxLimits = config["limits"]
  options: scoring.TaskOptions = config["options"]
  sandbox: Sandbox | None = None

  def get_sandbox() -> Sandbox:
    nonlocal sandbox
    if sandbox is None:
      sandbox = Sandbox(limits, backend=config["backend"],
                        allow_unsandboxed=options.allow_unsandboxed)
    return sandbox

  # Our stdout is the protocol pipe: keep stray prints (sympy, warnings) off it.
  out_fd = os.dup(1)
  os.dup2(2, 1)
  try:
    while True:
      job = read_frame(0)
      if job is None:
        return
      task, problem, completion = job
      try:
        reply = scoring.score(task, problem, completion, get_sandbox, options)
      except SandboxError as e:
        reply = (0.0, f"failed: sandbox error: {e}")
      except Exception as e:  # bad input: the pool raises it to the caller
        reply = (None, f"{type(e).__name__}: {e}")
      write_frame(out_fd, reply)
  finally:
    if sandbox is not None:
      sandbox.close()


if __name__ == "__main__":
  sys.exit(main())
