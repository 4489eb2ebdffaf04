"""ONNX downloads, exported once per checkpoint and kept in the artefact store.

An export traces the network under models.export's lock, the one an API process's model
loads take for their own ONNX sessions: exported on every download, each `?format=onnx`
held up loads (and predictions waiting for them) for the length of a trace. The object is
named by the checkpoint's sha256, so a changed checkpoint is never answered by an old
export, and its own sha256 is recorded on the version's row (onnx_sha256), which every
read is checked against: an export counts once its row says so.
"""

import threading
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.store.artefacts import ArtefactMissing, ArtefactStore, load
from app.store.tables import ModelVersion
from models.export import onnx_with_metadata

_EXPORTING: dict[str, threading.Lock] = {}  # one export of a checkpoint at once
_GUARD = threading.Lock()


def export_key(checkpoint_sha256: str) -> str:
    return f"exports/{checkpoint_sha256}.onnx"


def cached_onnx(version: ModelVersion, session: Session, store: ArtefactStore) -> Path:
    """A local file of the version's ONNX export, exported by the first request that needs
    it (others in this process wait for that one). Raises models.export.ExportError for a
    network with no ONNX form."""
    key = export_key(version.sha256)
    with _GUARD:
        lock = _EXPORTING.setdefault(version.sha256, threading.Lock())
    with lock:
        session.refresh(version, ["onnx_sha256"])  # another process may have exported it
        if version.onnx_sha256 is not None:
            try:
                return store.read(key, version.onnx_sha256)
            except ArtefactMissing:  # removed by hand: export it again
                pass
        content = onnx_with_metadata(load(store, version.checkpoint_path, version.sha256))
        sha256 = store.write(key, lambda file: file.write(content))
        session.execute(
            update(ModelVersion).where(ModelVersion.id == version.id).values(onnx_sha256=sha256)
        )
        session.commit()
        return store.read(key, sha256)


def forget_export(store: ArtefactStore, checkpoint_sha256: str) -> None:
    """Remove a deleted version's export."""
    store.delete(export_key(checkpoint_sha256))
    with _GUARD:
        _EXPORTING.pop(checkpoint_sha256, None)
