#!/usr/bin/env bash
# On a machine with NVIDIA GPUs and only the project: install, then three steps, each under
# a time budget (8 minutes in all, the install aside):
#  1. CIFAR-10 with the fastest recipe through the worker's training code on one GPU, in
#     one process: time to 94 % and images/s (bench/gpu_check.py);
#  2. the same through the service: the API (Granian) and a worker on trainserve.cuda
#     (GPU 0) on the embedded defaults, the zips uploaded and the job posted and followed
#     over HTTP: time to 94 % and images/s beside step 1's (bench/gpu_check_service.py);
#  3. with more than one GPU visible, the same network as a DDP group of one rank per GPU
#     (DDP_EPOCHS epochs, --batch images per rank): the group's images/s and its scaling
#     efficiency against step 1's figure.
# Usage: bash bench/gpu_check.sh [gpu_check.py options]
#        bash bench/gpu_check.sh --smoke   # every step on the CPU, tiny: checks the script
#                                          # on an installed project, measures nothing
# Budgets (seconds): BUDGET_IN_PROCESS_S, BUDGET_SERVICE_S, BUDGET_DDP_S.
set -euo pipefail
cd "$(dirname "$0")/.."
budget_in_process=${BUDGET_IN_PROCESS_S:-180}
budget_service=${BUDGET_SERVICE_S:-210}
budget_ddp=${BUDGET_DDP_S:-90}

no_gpu() {
  echo "no NVIDIA GPU: $1; this check needs one (bash bench/gpu_check.sh --smoke runs its steps on the CPU)" >&2
  exit 1
}

# Runs "$@" under a budget of $1 seconds (SIGTERM past it, SIGKILL 15 s later).
within() {
  local budget=$1 name=$2 status=0
  shift 2
  timeout -k 15 "$budget" "$@" || status=$?
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "$name: over its budget of $budget s" >&2
  fi
  return "$status"
}

if [ "${1:-}" = "--smoke" ]; then
  shift
  set -- --device cpu --epochs 1 --limit 500 --width 16 --batch 64 --no-compile "$@"
  smoke=1
else
  smoke=0
  command -v nvidia-smi >/dev/null || no_gpu "nvidia-smi is not installed (no NVIDIA driver)"
  gpus_seen=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1) ||
    no_gpu "nvidia-smi found none: $gpus_seen"
  echo "$gpus_seen"
  make install >/dev/null
fi
export PYTHONPATH=$PWD
if [ "$smoke" -eq 0 ]; then
  .venv/bin/python -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null ||
    no_gpu "torch $(.venv/bin/python -c 'import torch; print(torch.__version__)') sees no CUDA device"
fi
echo "budgets: in-process $budget_in_process s, service $budget_service s, DDP $budget_ddp s:" \
  "$((budget_in_process + budget_service + budget_ddp)) s in all"
started=$SECONDS
single=$(mktemp)
trap 'rm -f "$single"' EXIT

echo "== 1. in-process, one GPU (bench/gpu_check.py)"
within "$budget_in_process" in-process .venv/bin/python bench/gpu_check.py "$@" | tee "$single"
baseline=$(sed -n 's/^images\/s: \([0-9]*\) .*/\1/p' "$single")
reached=$(sed -n 's/^time to 94%: \([0-9.]*\) s;.*/\1/p' "$single")

echo "== 2. through the API and a worker (bench/gpu_check_service.py)"
# The script stops its job and processes at its budget; `within` is the backstop.
within $((budget_service + 30)) service .venv/bin/python bench/gpu_check_service.py "$@" \
  --budget-s "$budget_service" --baseline-images-s "$baseline" ${reached:+--baseline-time-s "$reached"}

echo "== 3. DDP, one rank per GPU"
if [ "$smoke" -eq 1 ]; then
  echo "DDP: not in the smoke run"
else
  gpus=$(.venv/bin/python -c 'import torch; print(torch.cuda.device_count())')
  if [ "$gpus" -lt 2 ]; then
    echo "DDP: $gpus GPU visible, no group to scale over"
  else
    echo "DDP: $gpus ranks, one per GPU"
    within "$budget_ddp" DDP .venv/bin/python -m torch.distributed.run --standalone \
      --nproc-per-node "$gpus" bench/gpu_check.py "$@" --epochs "${DDP_EPOCHS:-4}" \
      --baseline "$baseline"
  fi
fi
echo "gpu_check: $((SECONDS - started)) s in all, install aside"
