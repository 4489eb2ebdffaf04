"""Deletes on the real stack (PostgreSQL, Redis, the Celery worker, the store): refused while
in use, then rows and objects gone, and what other rows recorded kept."""

import pytest

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
    older_objects = f"jobs/{older['id']}/"
    older_model = api.get(f"/models/{older['model_id']}").json()
    assert older_model["checkpoint_path"] in stack.stored(older_objects)

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
    assert stack.stored(older_objects) == []
    assert api.get(f"/jobs/{older['id']}").status_code == 404
    assert api.get(f"/models/{older['model_id']}").status_code == 404
    history = api.get("/models/e2e-deletes/aliases/latest/history").json()
    assert [move["to_version_id"] for move in history] == [newer["model_id"], older["model_id"]]

    dataset_key = stack.dataset_row(dataset["id"]).path
    assert stack.holds(dataset_key)
    assert api.delete(f"/datasets/{dataset['id']}").status_code == 204
    assert api.get(f"/datasets/{dataset['id']}").status_code == 404
    assert not stack.holds(dataset_key)
    # The ended jobs that ran on it keep its row, as a tombstone.
    assert stack.dataset_row(dataset["id"]).deleted_at is not None
    assert api.get(f"/jobs/{newer['id']}").json()["dataset_id"] == dataset["id"]
