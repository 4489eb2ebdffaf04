#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and only the project: install, then train CIFAR-10 with the
# fastest recipe through the service's training code; prints time to 94 % and images/s. Then,
# with more than one GPU visible, the same network as a DDP group of one rank per GPU
# (DDP_EPOCHS epochs, --batch images per rank): the group's images/s and its scaling
# efficiency against the single GPU's figure.
# Usage: bash bench/gpu_check.sh [gpu_check.py options]   (budget: under 8 minutes in all)
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
make install >/dev/null
.venv/bin/python -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA GPU"'
export PYTHONPATH=$PWD
single=$(mktemp)
trap 'rm -f "$single"' EXIT
.venv/bin/python bench/gpu_check.py "$@" | tee "$single"
gpus=$(.venv/bin/python -c 'import torch; print(torch.cuda.device_count())')
if [ "$gpus" -lt 2 ]; then
  echo "DDP: $gpus GPU visible, no group to scale over"
  exit 0
fi
baseline=$(sed -n 's/^images\/s: \([0-9]*\) .*/\1/p' "$single")
echo "DDP: $gpus ranks, one per GPU"
exec .venv/bin/python -m torch.distributed.run --standalone --nproc-per-node "$gpus" \
  bench/gpu_check.py "$@" --epochs "${DDP_EPOCHS:-4}" --baseline "$baseline"
