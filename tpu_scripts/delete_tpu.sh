#!/usr/bin/env bash
# Deletes the TPU VM / pod slice (stops the billing). Fetch results first.
# Usage: tpu_scripts/delete_tpu.sh
set -euo pipefail
# shellcheck source=tpu_scripts/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"

gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_ARGS[@]}" --quiet
