"""Checkpoints are trusted only when their sha256 matches, and never unpickle objects."""

import re
from pathlib import Path

import pytest
import torch

from models.files import load_plain
from tests.conftest import PROJECT, app_client
from tests.utils.api import IMAGE_JOB, TOP_IMAGE, upload
from tests.utils.jobs import stored_file
from workers.runner import run_job


class Payload:
    """What a malicious pickle would carry: unpickling it touches a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_tampered_checkpoint_is_refused(embedded_settings, two_class_zip):
    image = TOP_IMAGE
    with app_client() as client:
        dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
        job_id = client.post("/jobs", json={**IMAGE_JOB, "dataset_id": dataset_id}).json()["id"]
        run_job(job_id)
        model = client.get(f"/models/{job_id}").json()
        checkpoint = stored_file(embedded_settings, model["checkpoint_path"])
        state = torch.load(checkpoint, weights_only=True)
        state["classes"] = list(reversed(state["classes"]))  # a swap of the labels
        torch.save(state, checkpoint)
        refused = client.post("/predict", files={"file": ("x.png", image)})
    assert refused.status_code == 503 and "does not match its sha256" in refused.json()["detail"]


def test_a_pickled_object_in_a_checkpoint_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "extra": Payload(marker)}, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_plain(path)
    assert not marker.exists()


def test_only_load_plain_reads_torch_files():
    """Every torch.load goes through load_plain (weights_only=True); nothing uses pickle."""
    sources = [
        p for folder in ("app", "models", "workers") for p in (PROJECT / folder).rglob("*.py")
    ]
    calls = re.compile(r"torch\.load\((?!\.\.\.)")  # not the docstrings' "torch.load(...)"
    loads = {p.relative_to(PROJECT).as_posix() for p in sources if calls.search(p.read_text())}
    assert loads == {"models/files.py"}
    assert "weights_only=True" in (PROJECT / "models" / "files.py").read_text()
    assert not [
        p
        for p in sources
        if re.search(r"^\s*(import|from) (pickle|dill|joblib)", p.read_text(), re.M)
    ]
