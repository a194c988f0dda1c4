#!/usr/bin/env bash
# Copies local files or directories (datasets, a converted base checkpoint) to
# ~/$REMOTE_DATA on every worker. Datasets are read from local files; a
# converted base checkpoint may instead stay in a gs:// bucket (the loop and
# task_vocabulary read gs:// checkpoints directly).
# Usage: tpu_scripts/copy_data.sh PATH [PATH...]
set -euo pipefail
# shellcheck source=tpu_scripts/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"

if [[ $# -eq 0 ]]; then
  echo "usage: $0 PATH [PATH...]  (copied to ~/$REMOTE_DATA on every worker)" >&2
  exit 2
fi
on_all_workers "mkdir -p ~/$REMOTE_DATA"
for path in "$@"; do
  gcloud compute tpus tpu-vm scp --recurse "$path" "$TPU_NAME:$REMOTE_DATA/" "${GCLOUD_ARGS[@]}" --worker=all
done
