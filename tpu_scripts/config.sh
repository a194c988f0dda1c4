#!/usr/bin/env bash
# Shared settings for the tpu_scripts/*.sh scripts; sourced, not run.
# Override any of them in the environment, e.g.
#   TPU_NAME=restem-v4 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 tpu_scripts/create_tpu.sh
# shellcheck disable=SC2034  # Variables are used by the scripts that source this file.

TPU_NAME="${TPU_NAME:-restem-tpu}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"           # v4-8 = one host; v4-32 = 4-host pod slice.
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${PROJECT:-}"                                  # Empty: gcloud's default project.
REMOTE_DIR="${REMOTE_DIR:-restem_jax}"                  # Package checkout on every worker (~/...).
REMOTE_DATA="${REMOTE_DATA:-restem_data}"               # Data / checkpoints on every worker.
WORKDIR="${WORKDIR:-restem_work}"                       # Run outputs. Multi-host slices: gs://bucket/path
                                                        # (every host must see it; a per-host disk fails at start).
PYTHON="${PYTHON:-python3}"

# gcloud arguments shared by every call.
GCLOUD_ARGS=(--zone="$ZONE")
if [[ -n "$PROJECT" ]]; then
  GCLOUD_ARGS+=(--project="$PROJECT")
fi

# Runs a shell command on every worker of the slice (all hosts of a pod at once).
on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_ARGS[@]}" --worker=all --command="$1"
}
