#!/usr/bin/env bash
# seg_jax on a Cloud TPU VM pod slice: copies this checkout to every worker, installs it with
# the TPU build of jax, and runs the same command on all workers at once. JAX reads the slice
# from the TPU VM's metadata: no coordinator flags needed.
#
#   launch/tpu_vm.sh TPU_NAME ZONE [seg_jax.main flags...]
#   launch/tpu_vm.sh my-v4-32 us-central2-b --config configs/deeplabv3_r50_d8.py \
#       --workdir /mnt/shared/runs/deeplabv3 --config.data.manual_dir=/mnt/shared/cityscapes \
#       --config.model.pretrained=/mnt/shared/weights/resnet50_v1c-2cccc1ad.pth
#
# Environment:
#   PROJECT     gcloud project (default: gcloud's configured one)
#   REMOTE_DIR  where the checkout goes on each worker (default: seg_jax in the home folder)
#   STEPS       which steps to run: any of copy,install,run (default: all three)
#   DRY_RUN=1   print the gcloud commands instead of running them
# The TPU VM must exist (gcloud compute tpus tpu-vm create ...). The workdir and the data must
# be on storage every worker sees (a Filestore NFS share or a gcsfuse-mounted bucket).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 TPU_NAME ZONE [seg_jax.main flags...]" >&2
  exit 2
fi
tpu=$1
zone=$2
shift 2
remote_dir=${REMOTE_DIR:-seg_jax}
steps=${STEPS:-copy,install,run}
repo=$(cd "$(dirname "$0")/.." && pwd)
jax_version=$(sed -n 's/^jax==//p' "$repo/requirements.txt")

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$zone" --worker=all)
[[ -n "${PROJECT:-}" ]] && where+=(--project="$PROJECT")

run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

if [[ ",$steps," == *,copy,* ]]; then
  # The tracked files only: no virtual environment, runs or caches.
  archive=$(mktemp --suffix=.tar.gz)
  trap 'rm -f "$archive"' EXIT
  git -C "$repo" ls-files -z | tar -C "$repo" --null -T - -czf "$archive"
  run "${gcloud_tpu[@]}" scp "$archive" "$tpu:seg_jax.tar.gz" "${where[@]}"
  run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --command \
    "mkdir -p $remote_dir && tar -xzf seg_jax.tar.gz -C $remote_dir && rm seg_jax.tar.gz"
fi

if [[ ",$steps," == *,install,* ]]; then
  run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --command \
    "cd $remote_dir && python3 -m venv .venv && . .venv/bin/activate && \
pip install -q -r requirements.txt && pip install -q 'jax[tpu]==$jax_version' && \
pip install -q --no-deps -e ."
fi

if [[ ",$steps," == *,run,* ]]; then
  flags=$(printf '%q ' "$@")
  run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --command \
    "cd $remote_dir && . .venv/bin/activate && python -u -m seg_jax.main $flags"
fi
