"""The GPUs a worker sees, read without CUDA: nvidia-smi in a subprocess.

The worker's parent process must never initialise CUDA (it forks the pool's children
afterwards, pytorch#40403), so it asks nvidia-smi, which honours CUDA_VISIBLE_DEVICES for
the indices it lists, instead of torch.cuda.
"""

import os
import shutil
import subprocess


def visible_gpus() -> list[dict]:
    """[{"name": "NVIDIA H200", "memory_bytes": …}, …]; [] without nvidia-smi or a GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    query = [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
    try:
        listed = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True)
    except (subprocess.SubprocessError, OSError):
        return []
    gpus = {}
    for line in listed.stdout.strip().splitlines():
        index, name, mebibytes = (part.strip() for part in line.split(","))
        gpus[index] = {"name": name, "memory_bytes": int(float(mebibytes)) * 1024 * 1024}
    return [gpus[index] for index in _visible(list(gpus)) if index in gpus]


def _visible(indices: list[str]) -> list[str]:
    """The indices CUDA_VISIBLE_DEVICES leaves (by index; a UUID entry keeps them all)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return indices
    chosen = [part.strip() for part in visible.split(",") if part.strip()]
    if not all(part.isdigit() for part in chosen):
        return indices
    return chosen
