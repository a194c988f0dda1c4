#!/usr/bin/env bash
# Copies this checkout to every worker and installs it with the `tpu` extra
# (jax[tpu]) and the `convert` extra (safetensors/gguf readers) there, and
# bubblewrap, the sandbox code rewards (APPS, HumanEval) run model-written
# programs in; then prints the sandbox backend each worker has.
# Usage: tpu_scripts/setup_workers.sh        (run from anywhere inside the checkout)
set -euo pipefail
# shellcheck source=tpu_scripts/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
archive="$(mktemp -d)/restem_jax.tar.gz"
tar -czf "$archive" -C "$repo" --exclude=.git --exclude='*.pyc' --exclude=__pycache__ .
gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME":restem_jax.tar.gz "${GCLOUD_ARGS[@]}" --worker=all
on_all_workers "set -euo pipefail; mkdir -p ~/$REMOTE_DIR && tar -xzf ~/restem_jax.tar.gz -C ~/$REMOTE_DIR \
  && sudo apt-get update -qq && sudo apt-get install -y -qq bubblewrap \
  && $PYTHON -m pip install --upgrade pip && $PYTHON -m pip install -e ~/$REMOTE_DIR'[tpu,convert]' \
  && $PYTHON -c 'import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0].platform)' \
  && $PYTHON -c 'from restem_jax import rewards; print(rewards.isolation_description())'"
rm -f "$archive"
