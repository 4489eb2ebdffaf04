"""One upload's ingestion in a process of its own, and what it cost in memory.

    python -m tests.utils.ingest_peak FOLDER FILE [FILE ...]

runs `app.ingest.ingest_upload` on the files, as `POST /datasets` runs it on a spooled
upload (the files read from disk), with the settings of the environment and a migrated
SQLite database and artefact folder in FOLDER; and prints one JSON object: whether the
dataset was stored or refused (and why), and how far the process's resident memory rose
above what it held before (VmHWM, reset through /proc/self/clear_refs, minus VmRSS then).
"""

import json
import sys
from pathlib import Path

from tests.conftest import migrate


def memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def main(folder: Path, paths: list[Path]) -> dict:
    import os

    os.environ["TRAINSERVE_DATABASE_URL"] = f"sqlite:///{folder}/trainserve.db"
    os.environ["TRAINSERVE_ARTIFACTS_DIR"] = str(folder / "artifacts")
    migrate(os.environ["TRAINSERVE_DATABASE_URL"])

    from app.config import get_settings
    from app.ingest import ingest_upload, read_options
    from app.store.db import get_session_factory
    from models.data import DatasetError, NamedFile

    settings = get_settings()
    files = [NamedFile(path.name, open(path, "rb")) for path in paths]  # noqa: SIM115
    with get_session_factory()() as session:
        session.connection()  # the pool's connection opened before the reset
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM from VmRSS now
        before = memory_kib("VmRSS")
        try:
            dataset, _ = ingest_upload(session, settings, files, None, read_options(settings))
            outcome = {"stored": True, "counts": dataset.counts}
        except DatasetError as exc:
            outcome = {"stored": False, "detail": str(exc)}
        peak = memory_kib("VmHWM")
    return outcome | {"rise_bytes": (peak - before) * 1024}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])))
