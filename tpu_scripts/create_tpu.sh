#!/usr/bin/env bash
# Creates the TPU VM (or pod slice) named $TPU_NAME and waits until it is READY.
# Usage: [TPU_NAME=..] [ZONE=..] [ACCELERATOR_TYPE=v4-8|v4-32|v5litepod-8|..] tpu_scripts/create_tpu.sh
# Add SPOT=1 for a spot (preemptible) slice.
set -euo pipefail
# shellcheck source=tpu_scripts/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"

extra=()
if [[ "${SPOT:-0}" == "1" ]]; then
  extra+=(--spot)
fi
gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_ARGS[@]}" \
  --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${extra[@]}"
gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_ARGS[@]}" --format="value(state)"
