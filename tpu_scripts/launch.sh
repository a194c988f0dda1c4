#!/usr/bin/env bash
# Starts `python -m restem_jax.main` on every worker at once (JAX needs all
# hosts of a pod slice to run the same program; --distributed makes each call
# jax.distributed.initialize()). Extra arguments go to restem_jax.main.
# Usage: tpu_scripts/launch.sh --gin_file=gin_configs/models/gemma_2b.gin --gin_file=RUN.gin
# DETACH=1 runs it under nohup (log: ~/restem_run.log on each worker) and returns at once.
set -euo pipefail
# shellcheck source=tpu_scripts/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"

args=""
for arg in "$@"; do
  args+=" $(printf '%q' "$arg")"
done
run="cd ~/$REMOTE_DIR && $PYTHON -m restem_jax.main --distributed --workdir=$WORKDIR$args"
if [[ "${DETACH:-0}" == "1" ]]; then
  on_all_workers "nohup bash -c $(printf '%q' "$run") > ~/restem_run.log 2>&1 &"
else
  on_all_workers "$run"
fi
