"""Ingestion's memory, measured: each kind of upload near TRAINSERVE_MAX_INGEST_MEMORY_BYTES
stays within it (plus a stated margin) as the rise of a process's resident memory, and one
over it is refused, naming the setting, with nothing stored."""

import io
import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PROJECT, idx_bytes, png_bytes
from tests.utils.api import upload

CAP = 64 << 20
# What a process's memory rises by besides what the accounting charges: modules torch.save
# and the checks import on first use, the allocator's pages kept around what it frees.
MARGIN = 16 << 20
REFUSED_BELOW = 0.8  # each upload is sized so that a cap this much smaller refuses it


def text_table(rows: int = 17_500) -> bytes:
    """Texts of 1,000 characters: the kind whose texts the accounting charges most."""
    lines = ["text,label"] + [f"{i:06d} {'x' * 993},{'ab'[i % 2]}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def image_zip_of_noise(count: int = 2_250, side: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(count):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            archive.writestr(f"{'ab'[i % 2]}/{i}.png", png_bytes(pixels))
    return buffer.getvalue()


def idx_files(count: int = 33_000) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (count, 28, 28))),
        "train-labels-idx1-ubyte.gz": idx_bytes(rng.integers(0, 10, (count,))),
    }


UPLOADS = {
    "csv": lambda: {"texts.csv": text_table()},
    "image zip": lambda: {"images.zip": image_zip_of_noise()},
    "idx": idx_files,
}


def ingest_in_a_process(folder: Path, files: dict[str, bytes], cap: int) -> dict:
    """tests/utils/ingest_peak.py's report of ingesting these files under this cap."""
    (folder / "upload").mkdir(parents=True)
    paths = []
    for name, data in files.items():
        paths.append(folder / "upload" / name)
        paths[-1].write_bytes(data)
    env = os.environ | {"TRAINSERVE_MAX_INGEST_MEMORY_BYTES": str(cap), "PYTHONPATH": str(PROJECT)}
    run = subprocess.run(
        [sys.executable, "-m", "tests.utils.ingest_peak", str(folder), *map(str, paths)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


def stored_datasets(folder: Path) -> tuple[int, list[Path]]:
    """The rows of the folder's database and the files of its artefact folder."""
    with sqlite3.connect(folder / "trainserve.db") as database:
        (rows,) = database.execute("SELECT count(*) FROM datasets").fetchone()
    return rows, sorted((folder / "artifacts").rglob("*.pt"))


@pytest.mark.parametrize("kind", UPLOADS)
def test_an_upload_near_the_memory_cap_stays_within_it(tmp_path, kind):
    files = UPLOADS[kind]()
    near = ingest_in_a_process(tmp_path / "near", files, CAP)
    assert near["stored"], near
    assert near["rise_bytes"] <= CAP + MARGIN, f"{kind}: rose {near['rise_bytes'] >> 20} MiB"
    over = ingest_in_a_process(tmp_path / "over", files, int(CAP * REFUSED_BELOW))
    assert not over["stored"], f"{kind} is not near the cap: stored under {REFUSED_BELOW} of it"
    assert f"past {int(CAP * REFUSED_BELOW)} bytes of memory to ingest" in over["detail"]
    assert "(TRAINSERVE_MAX_INGEST_MEMORY_BYTES)" in over["detail"]
    assert over["rise_bytes"] <= CAP * REFUSED_BELOW + MARGIN
    assert stored_datasets(tmp_path / "over") == (0, [])


def test_the_api_refuses_an_upload_over_the_memory_cap(
    client, embedded_settings, tmp_path, monkeypatch
):
    monkeypatch.setattr(embedded_settings, "max_ingest_memory_bytes", 4 << 20)
    refused = upload(client, text_table(rows=2_000), "texts.csv")
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("line ")  # the row that went past it
    assert "past 4194304 bytes of memory to ingest" in refused.json()["detail"]
    assert "(TRAINSERVE_MAX_INGEST_MEMORY_BYTES)" in refused.json()["detail"]
    assert client.get("/datasets").json()["items"] == []
    assert list((tmp_path / "artifacts").rglob("*.pt")) == []
    monkeypatch.setattr(embedded_settings, "max_ingest_memory_bytes", 64 << 20)
    assert upload(client, text_table(rows=2_000), "texts.csv").status_code == 201
