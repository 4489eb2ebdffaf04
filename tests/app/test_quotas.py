"""Ceilings on jobs, the per-key storage quota, deletes, event-stream limits and ONNX
exports, in-process on the embedded defaults (SQLite, files on disk, the worker's code)."""

import json
import os
import re
from pathlib import Path
from urllib.parse import quote, unquote

import httpx
import pytest
import torch
from sqlalchemy import func, select

from app.store.db import get_session_factory
from app.store.tables import Dataset, JobEvent, MetricPoint
from tests.app.test_jobs import parse_sse
from tests.conftest import ADMIN_KEY, bearer
from tests.utils.api import IMAGE_JOB, new_key, upload
from tests.utils.servers import start_api
from tests.utils.waiting import wait_until
from workers.runner import run_job


@pytest.fixture
def dataset_id(client, two_class_zip) -> str:
    return upload(client, two_class_zip, "d.zip").json()["id"]


def job_spec(dataset_id: str, **fields) -> dict:
    return {**IMAGE_JOB, "dataset_id": dataset_id, **fields}


def stored_files(folder) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---- ceilings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "ceiling", "spec", "named"),
    [
        ("max_job_epochs", 1, {}, "hyperparameters.epochs is 2"),
        ("max_job_steps", 9, {}, "training batches"),  # 2 epochs of 5 batches of 8
        ("max_job_run_seconds", 60, {"limits": {"max_run_seconds": 61}}, "max_run_seconds"),
        ("max_job_attempts", 2, {"limits": {"max_attempts": 3}}, "limits.max_attempts is 3"),
    ],
)
def test_a_spec_over_a_ceiling_is_a_422_naming_it(
    client, dataset_id, embedded_settings, monkeypatch, setting, ceiling, spec, named
):
    monkeypatch.setattr(embedded_settings, setting, ceiling)
    refused = client.post("/jobs", json=job_spec(dataset_id, **spec))
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert named in detail and f"TRAINSERVE_{setting.upper()}" in detail
    assert client.get("/jobs").json()["items"] == []


def test_ceilings_apply_to_the_values_a_recipe_fills(
    client, dataset_id, embedded_settings, monkeypatch
):
    monkeypatch.setattr(embedded_settings, "max_job_epochs", 20)
    spec = {"task": "image_classification", "dataset_id": dataset_id}  # tutorial data: 40 images
    refused = client.post("/jobs", json={**spec, "model": {"arch": "tutorial_cnn"}})
    assert refused.status_code == 422
    assert "with the defaults filled" in refused.json()["detail"]
    assert "TRAINSERVE_MAX_JOB_EPOCHS" in refused.json()["detail"]


def test_a_job_without_a_time_limit_gets_the_ceilings(client, dataset_id, embedded_settings):
    job = client.post("/jobs", json=job_spec(dataset_id)).json()
    assert job["spec"]["limits"]["max_run_seconds"] == embedded_settings.max_job_run_seconds
    assert job["spec_sources"]["limits.max_run_seconds"].startswith("ceiling:")
    run_job(job["id"])
    assert client.get(f"/jobs/{job['id']}").json()["status"] == "succeeded"


# ---- storage quota -----------------------------------------------------------------------


def test_uploads_and_jobs_over_the_storage_quota_are_refused(
    client, two_class_zip, sentiment_csv, embedded_settings, monkeypatch
):
    key = new_key(client, "train")
    as_key = bearer(key["key"])
    datasets_folder = embedded_settings.artifacts_dir / "datasets"
    monkeypatch.setattr(embedded_settings, "storage_quota_bytes", 1)
    refused = client.post("/datasets", files={"file": ("d.zip", two_class_zip)}, headers=as_key)
    assert refused.status_code == 413
    assert "stores 0 bytes" in refused.json()["detail"]
    assert "storage quota is 1 bytes" in refused.json()["detail"]
    assert stored_files(datasets_folder) == []

    monkeypatch.setattr(embedded_settings, "storage_quota_bytes", 10**9)
    stored = client.post("/datasets", files={"file": ("d.zip", two_class_zip)}, headers=as_key)
    assert stored.status_code == 201
    [file] = stored_files(datasets_folder)
    used = file.stat().st_size
    monkeypatch.setattr(embedded_settings, "storage_quota_bytes", used)  # full now
    job = client.post("/jobs", json=job_spec(stored.json()["id"]), headers=as_key)
    assert job.status_code == 409 and f"stores {used} bytes" in job.json()["detail"]
    other = client.post("/datasets", files={"file": ("t.csv", sentiment_csv)}, headers=as_key)
    assert other.status_code == 413 and f"stores {used} bytes" in other.json()["detail"]
    # Another key's usage is its own; the admin key stores nothing yet.
    assert client.post("/datasets", files={"file": ("t.csv", sentiment_csv)}).status_code == 201

    assert client.delete(f"/datasets/{stored.json()['id']}", headers=as_key).status_code == 204
    again = client.post("/datasets", files={"file": ("t.csv", sentiment_csv)}, headers=as_key)
    assert again.status_code == 200  # the admin key's copy: the same bytes, stored once


def test_an_upload_that_decodes_past_the_quota_is_not_kept(
    client, sentiment_csv, embedded_settings, monkeypatch
):
    monkeypatch.setattr(embedded_settings, "storage_quota_bytes", len(sentiment_csv) + 1)
    refused = upload(client, sentiment_csv, "t.csv")
    assert refused.status_code == 413, refused.text  # the decoded tensors took more room
    assert client.get("/datasets").json()["items"] == []
    assert stored_files(embedded_settings.artifacts_dir / "datasets") == []


# ---- deleting datasets -------------------------------------------------------------------


def test_a_dataset_in_use_is_kept_and_then_deleted_with_its_file(
    client, dataset_id, two_class_zip, embedded_settings
):
    validation = upload(client, two_class_zip, "v.zip", resize="16").json()["id"]
    job = client.post(
        "/jobs", json=job_spec(dataset_id, validation={"dataset_id": validation})
    ).json()
    for used in (dataset_id, validation):  # trained on, and validated on
        refused = client.delete(f"/datasets/{used}")
        assert refused.status_code == 409 and job["id"] in refused.json()["detail"]
    files = stored_files(embedded_settings.artifacts_dir / "datasets")
    assert len(files) == 2

    assert client.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert client.delete(f"/datasets/{dataset_id}").status_code == 204
    assert client.get(f"/datasets/{dataset_id}").status_code == 404
    assert client.delete(f"/datasets/{dataset_id}").status_code == 404
    assert [d["id"] for d in client.get("/datasets").json()["items"]] == [validation]
    assert len(stored_files(embedded_settings.artifacts_dir / "datasets")) == 1
    # The ended job still names it: the row stays, as a tombstone, for the job's history.
    assert client.get(f"/jobs/{job['id']}").json()["dataset_id"] == dataset_id
    with get_session_factory()() as session:
        assert session.get(Dataset, dataset_id).deleted_at is not None
    refused = client.post("/jobs", json=job_spec(dataset_id))
    assert refused.status_code == 422 and "not a known dataset" in refused.text
    # The same bytes again make a new dataset: the tombstone freed their fingerprint.
    again = upload(client, two_class_zip, "d.zip")
    assert again.status_code == 201 and again.json()["id"] != dataset_id
    # Once the last job that named it is deleted, so is the tombstone.
    assert client.delete(f"/jobs/{job['id']}").status_code == 204
    with get_session_factory()() as session:
        assert session.get(Dataset, dataset_id) is None
        assert session.get(Dataset, validation) is not None  # not deleted: kept as it was


def test_a_dataset_no_job_named_leaves_no_row(client, dataset_id):
    assert client.delete(f"/datasets/{dataset_id}").status_code == 204
    with get_session_factory()() as session:
        assert session.get(Dataset, dataset_id) is None
    assert client.delete("/datasets/nope").status_code == 404


# ---- deleting jobs -----------------------------------------------------------------------


def test_a_job_is_deleted_with_its_model_rows_and_files_once_nothing_uses_it(
    client, dataset_id, embedded_settings
):
    first = client.post("/jobs", json=job_spec(dataset_id, name="shapes")).json()
    refused = client.delete(f"/jobs/{first['id']}")
    assert refused.status_code == 409 and "is queued" in refused.json()["detail"]
    run_job(first["id"])
    second = client.post("/jobs", json=job_spec(dataset_id, name="shapes", seed=1)).json()
    run_job(second["id"])
    first_model = client.get(f"/models/{first['id']}").json()
    onnx = client.get(f"/models/{first_model['id']}/weights", params={"format": "onnx"})
    assert onnx.status_code == 200
    folder = embedded_settings.artifacts_dir / "jobs" / first["id"]
    export = embedded_settings.artifacts_dir / "exports" / f"{first_model['sha256']}.onnx"
    names = {p.name for p in stored_files(folder)}
    assert names == {"a1-e2-last.pt", Path(first_model["checkpoint_path"]).name}
    assert export.exists()

    latest = client.delete(f"/jobs/{second['id']}")
    assert latest.status_code == 409 and "latest" in latest.json()["detail"]
    assert client.delete(f"/jobs/{first['id']}").status_code == 204
    assert not folder.exists() and not export.exists()
    assert client.get(f"/jobs/{first['id']}").status_code == 404
    assert client.get(f"/models/{first_model['id']}").status_code == 404
    assert client.delete(f"/jobs/{first['id']}").status_code == 404
    with get_session_factory()() as session:
        for table in (JobEvent, MetricPoint):
            rows = select(func.count()).select_from(table).where(table.job_id == first["id"])
            assert session.scalar(rows) == 0
    # What the other rows recorded stays: the alias's history names the deleted version.
    history = client.get("/models/shapes/aliases/latest/history").json()
    assert first_model["id"] in [move["to_version_id"] for move in history]
    assert client.get(f"/jobs/{second['id']}").json()["status"] == "succeeded"


# ---- out of memory -----------------------------------------------------------------------


def test_out_of_memory_fails_the_job_at_once_with_advice(client, dataset_id, monkeypatch):
    def out_of_memory(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("models.image.TutorialCNN.forward", out_of_memory)
    job_id = client.post("/jobs", json=job_spec(dataset_id, limits={"max_attempts": 3})).json()[
        "id"
    ]
    run_job(job_id)
    job = client.get(f"/jobs/{job_id}").json()
    assert (job["status"], job["end_reason"], job["attempt"]) == ("failed", "out_of_memory", 1)
    assert "out of memory" in job["error"] and "batch_size 8" in job["error"]
    assert "smaller hyperparameters.batch_size (say 4)" in job["error"]


# ---- event streams -----------------------------------------------------------------------


@pytest.fixture
def api_process(client, tmp_path):
    """An API process (Granian, as make run serves) on the in-process app's database, with
    no worker: a queued job stays queued, and its event stream open. (TestClient reads a
    whole stream before it answers.) Its settings: os.environ's, which embedded_settings
    set, and `env`."""
    started = []

    def start(**env: str) -> httpx.Client:
        log = tmp_path / "api.log"
        with open(log, "wb") as output:
            process, url = start_api(env=os.environ | env, stdout=output, log=log.read_text)
        started.append(process)
        return httpx.Client(base_url=url, headers=bearer(ADMIN_KEY), timeout=30)

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)
    log = (tmp_path / "api.log").read_text()
    assert "Traceback" not in log, log


def open_stream(api: httpx.Client, job_id: str, **headers: str) -> httpx.Response:
    """An event stream, its headers read: a 200 has taken its slot (dependencies run before
    the response starts), and holds it until it is closed."""
    request = api.build_request("GET", f"/jobs/{job_id}/events", headers=headers)
    return api.send(request, stream=True)


def test_a_key_holds_at_most_its_open_streams(client, dataset_id, api_process):
    """A train key follows its own job from three streams; the admin key, which sees every
    job, holds slots of its own."""
    owner_key = new_key(client, "train")
    owner = {"authorization": f"Bearer {owner_key['key']}"}
    shared = client.post(f"/datasets/{dataset_id}/shares", json={"key_id": owner_key["id"]})
    assert shared.status_code in (200, 201), shared.text
    job = client.post("/jobs", json=job_spec(dataset_id), headers=owner)  # queued: no end
    job_id = job.json()["id"]
    api = api_process(TRAINSERVE_MAX_EVENT_STREAMS_PER_KEY="2")
    held = [open_stream(api, job_id, **owner) for _ in range(2)]
    assert [r.status_code for r in held] == [200, 200]
    refused = open_stream(api, job_id, **owner)
    assert refused.status_code == 429 and "MAX_EVENT_STREAMS_PER_KEY" in refused.read().decode()
    theirs = open_stream(api, job_id)  # the admin key's
    assert theirs.status_code == 200  # another key's streams are its own
    held[0].close()  # the client leaves: its slot is free once the server notices
    reopened = wait_until(
        lambda: (r := open_stream(api, job_id, **owner)).status_code == 200 and r,
        timeout=10,
        what="the closed stream's slot to be free",
    )
    for response in (held[1], theirs, reopened):
        response.close()


def test_a_stream_ends_at_its_lifetime_and_resumes_after_its_last_event(
    client, dataset_id, embedded_settings, monkeypatch
):
    monkeypatch.setattr(embedded_settings, "max_stream_seconds", 0.3)
    job_id = client.post("/jobs", json=job_spec(dataset_id)).json()["id"]  # queued: no end
    first = parse_sse(client.get(f"/jobs/{job_id}/events").text)  # returns: it ended
    assert [json.loads(e["data"]) for e in first] == [{"status": "queued"}]
    client.post(f"/jobs/{job_id}/cancel")
    rest = client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": str(first[-1]["id"])})
    assert [json.loads(e["data"])["status"] for e in parse_sse(rest.text)] == ["cancelled"]


# ---- downloads ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ['report"; filename="evil.exe', "модель-猫"])
def test_download_names_are_encoded_and_cannot_be_picked_by_a_model_name(client, dataset_id, name):
    job_id = client.post("/jobs", json=job_spec(dataset_id, name=name)).json()["id"]
    run_job(job_id)
    model = client.get(f"/models/{job_id}").json()
    for format in ("pt", "safetensors", "onnx"):
        response = client.get(f"/models/{model['id']}/weights", params={"format": format})
        assert response.status_code == 200, (format, response.text)
        kind, fallback, encoded = response.headers["content-disposition"].split("; ")
        assert kind == "attachment"
        assert encoded == f"filename*=UTF-8''{quote(name, safe='')}-{model['id']}.{format}"
        assert unquote(encoded.split("''")[1]) == f"{name}-{model['id']}.{format}"
        # For clients that read only filename: ASCII, nothing that ends it or adds a part.
        assert re.fullmatch(rf'filename="[A-Za-z0-9._-]+-{model["id"]}\.{format}"', fallback)


def test_an_onnx_export_is_made_once_per_checkpoint(client, dataset_id, embedded_settings):
    job_id = client.post("/jobs", json=job_spec(dataset_id)).json()["id"]
    run_job(job_id)
    model = client.get(f"/models/{job_id}").json()
    url = f"/models/{model['id']}/weights"
    first = client.get(url, params={"format": "onnx"})
    export = embedded_settings.artifacts_dir / "exports" / f"{model['sha256']}.onnx"
    made = export.stat().st_mtime_ns
    second = client.get(url, params={"format": "onnx"})
    assert second.content == first.content == export.read_bytes()
    assert export.stat().st_mtime_ns == made  # answered from the file, not exported again
