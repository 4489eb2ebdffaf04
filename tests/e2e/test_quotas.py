"""Deletes on the real stack (PostgreSQL, Redis, the Celery worker): refused while in use,
then rows and files gone, and what other rows recorded kept."""

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.conftest import SENTIMENT_JOB, wait_for_job

pytestmark = pytest.mark.e2e


def test_deletes_wait_until_nothing_uses_a_dataset_or_a_job(api, stack, sentiment_csv):
    dataset = api.post("/datasets", files={"file": ("deletes.csv", sentiment_csv)}).json()
    spec = {**SENTIMENT_JOB, "dataset_id": dataset["id"], "name": "e2e-deletes"}
    older, newer = (
        wait_for_job(api, stack, api.post("/jobs", json={**spec, "seed": seed}).json()["id"])
        for seed in (0, 1)
    )
    assert older["status"] == newer["status"] == "succeeded"
    artifacts = stack.folder / "artifacts"
    older_folder = artifacts / "jobs" / older["id"]
    older_model = api.get(f"/models/{older['model_id']}").json()
    assert (artifacts / older_model["checkpoint_path"]).exists()

    running = api.post("/jobs", json={**spec, "hyperparameters": {"epochs": 200}}).json()
    for refused, in_use in (
        (api.delete(f"/datasets/{dataset['id']}"), running["id"]),
        (api.delete(f"/jobs/{running['id']}"), "cancel it"),
        (api.delete(f"/jobs/{newer['id']}"), "latest"),  # its version serves the name
    ):
        assert refused.status_code == 409 and in_use in refused.json()["detail"], refused.text
    api.post(f"/jobs/{running['id']}/cancel")
    assert wait_for_job(api, stack, running["id"])["status"] == "cancelled"

    assert api.delete(f"/jobs/{older['id']}").status_code == 204
    assert not older_folder.exists()
    assert api.get(f"/jobs/{older['id']}").status_code == 404
    assert api.get(f"/models/{older['model_id']}").status_code == 404
    history = api.get("/models/e2e-deletes/aliases/latest/history").json()
    assert [move["to_version_id"] for move in history] == [newer["model_id"], older["model_id"]]

    dataset_file = artifacts / stored_dataset(stack, dataset["id"]).path  # a key under it
    assert dataset_file.exists()
    assert api.delete(f"/datasets/{dataset['id']}").status_code == 204
    assert api.get(f"/datasets/{dataset['id']}").status_code == 404
    assert not dataset_file.exists()
    # The ended jobs that ran on it keep its row, as a tombstone.
    assert stored_dataset(stack, dataset["id"]).deleted_at is not None
    assert api.get(f"/jobs/{newer['id']}").json()["dataset_id"] == dataset["id"]


def stored_dataset(stack, dataset_id: str):
    """The dataset's row as PostgreSQL holds it (the API shows neither path nor deletion)."""
    engine = create_engine(stack.env["TRAINSERVE_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            query = text("SELECT path, deleted_at FROM datasets WHERE id = :id")
            return connection.execute(query, {"id": dataset_id}).one()
    finally:
        engine.dispose()
