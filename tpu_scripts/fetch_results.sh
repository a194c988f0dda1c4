#!/usr/bin/env bash
# Copies the run's workdir (summary.json, samples, metrics, logs) from worker 0,
# which writes the run-level artefacts, to a local directory.
# Usage: tpu_scripts/fetch_results.sh [LOCAL_DIR]   (default ./results/$TPU_NAME)
set -euo pipefail
# shellcheck source=tpu_scripts/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"

dest="${1:-results/$TPU_NAME}"
mkdir -p "$dest"
if [[ "$WORKDIR" == gs://* ]]; then
  gcloud storage cp --recursive "$WORKDIR" "$dest/"
else
  gcloud compute tpus tpu-vm scp --recurse "$TPU_NAME:$WORKDIR" "$dest/" "${GCLOUD_ARGS[@]}" --worker=0
fi
echo "results in $dest"
