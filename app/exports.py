"""ONNX downloads, exported once per checkpoint and kept beside the artefacts.

An export traces the network under models.export's lock, the one an API process's model
loads take for their own ONNX sessions: exported on every download, each `?format=onnx`
held up loads (and predictions waiting for them) for the length of a trace. The file is
named by the checkpoint's sha256, so a changed checkpoint is never answered by an old
export.
"""

import threading
from pathlib import Path

from app.store.versions import checkpoint_of
from models.export import onnx_with_metadata
from models.files import load_plain, write_atomically

_EXPORTING: dict[str, threading.Lock] = {}  # one export of a checkpoint at once
_GUARD = threading.Lock()


def export_path(artifacts_dir: Path, checkpoint_sha256: str) -> Path:
    return artifacts_dir / "exports" / f"{checkpoint_sha256}.onnx"


def cached_onnx(version, artifacts_dir: Path) -> Path:
    """The version's ONNX file, exported by the first request that needs it (others wait
    for that one). Raises models.export.ExportError for a network with no ONNX form."""
    path = export_path(artifacts_dir, version.sha256)
    if path.exists():
        return path
    with _GUARD:
        lock = _EXPORTING.setdefault(version.sha256, threading.Lock())
    with lock:
        if not path.exists():
            content = onnx_with_metadata(load_plain(checkpoint_of(version)))
            write_atomically(path, lambda file: file.write(content))
    return path


def forget_export(artifacts_dir: Path, checkpoint_sha256: str) -> None:
    """Remove a deleted version's export."""
    export_path(artifacts_dir, checkpoint_sha256).unlink(missing_ok=True)
    with _GUARD:
        _EXPORTING.pop(checkpoint_sha256, None)
