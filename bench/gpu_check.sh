#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and only the project: install, then train CIFAR-10 with the
# fastest recipe through the service's training code; prints time to 94 % and images/s.
# Usage: bash bench/gpu_check.sh [gpu_check.py options]   (budget: under 8 minutes in all)
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
make install >/dev/null
.venv/bin/python -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA GPU"'
exec .venv/bin/python bench/gpu_check.py "$@"
