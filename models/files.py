"""Atomic writes and hashing of the files training and serving exchange.

torch is imported by the two functions that use it, not by the module: the worker's
parent process reaches this module through app.store and must never load torch (it forks
the pool's children afterwards; CUDA before a fork breaks them, pytorch#40403).
"""

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def save_atomically(obj: dict, path: Path) -> str:
    """torch.save to a temporary file, fsync, rename; return the file's sha256.

    A reader never sees a half-written file, even if the process dies mid-write.
    """
    import torch

    return write_atomically(path, lambda file: torch.save(obj, file))


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> str:
    """`write` the file through a temporary one, fsync, rename; return the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Per process and thread: two threads may write the same file (an export) at once.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_folder(path.parent)  # the rename itself survives a power cut
    finally:
        temporary.unlink(missing_ok=True)
    return file_sha256(path)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_plain(path: Path, *, mmap: bool = False) -> dict:
    """Load a file written by save_atomically without unpickling arbitrary objects; with
    `mmap`, its tensors stay on disk until read (a few examples of a large dataset)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
