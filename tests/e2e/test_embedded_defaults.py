"""`make run`'s configuration: SQLite and the file-system broker, as separate processes."""

import pytest

from tests.conftest import migrate
from tests.e2e.conftest import NEVER_POLLED, SENTIMENT_JOB, Stack, wait_for_job

pytestmark = pytest.mark.e2e


@pytest.fixture
def embedded_stack(tmp_path):
    database_url = f"sqlite:///{tmp_path}/trainserve.db"
    migrate(database_url)
    stack = Stack(tmp_path, database_url, "filesystem://")
    stack.start_worker()
    # Reading the registry only at start: a new version is served through SQLite's
    # data_version alone, looked at by every request.
    stack.start_api(**NEVER_POLLED)
    yield stack
    stack.stop()


def train(api, stack: Stack, data: bytes) -> dict:
    dataset = api.post("/datasets", files={"file": ("t.csv", data)}).json()
    created = api.post("/jobs", json={**SENTIMENT_JOB, "dataset_id": dataset["id"]})
    job = wait_for_job(api, stack, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return job


def test_embedded_defaults_train_and_serve_without_any_server(
    embedded_stack, sentiment_csv, moods_csv
):
    with embedded_stack.client(timeout=60) as api:
        job = train(api, embedded_stack, sentiment_csv)
        assert len(job["history"]) == 3
        answer = api.post("/predict", json={"text": "truly great and wonderful"}).json()
        assert answer["label"] == "positive" and answer["job_id"] == job["id"]
        # Another model of the task, with other classes, answers the moment its job says
        # succeeded: the first model is loaded, so only a look at the database tells.
        moods = train(api, embedded_stack, moods_csv)
        answer = api.post("/predict", json={"text": "so joyful and glad"}).json()
        assert answer["job_id"] == moods["id"] and answer["label"] == "joy"
