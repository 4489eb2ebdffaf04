"""`make run`'s configuration: SQLite and the file-system broker, as separate processes."""

import pytest

from tests.conftest import migrate
from tests.e2e.conftest import SENTIMENT_JOB, Stack, wait_for_job

pytestmark = pytest.mark.e2e


@pytest.fixture
def embedded_stack(tmp_path):
    database_url = f"sqlite:///{tmp_path}/trainserve.db"
    migrate(database_url)
    stack = Stack(tmp_path, database_url, "filesystem://")
    stack.start_worker()
    stack.start_api()
    yield stack
    stack.stop()


def test_embedded_defaults_train_and_serve_without_any_server(embedded_stack, sentiment_csv):
    with embedded_stack.client(timeout=60) as api:
        dataset = api.post("/datasets", files={"file": ("t.csv", sentiment_csv)}).json()
        created = api.post("/jobs", json={**SENTIMENT_JOB, "dataset_id": dataset["id"]})
        job = wait_for_job(api, embedded_stack, created.json()["id"])
        assert job["status"] == "succeeded", job["error"]
        assert len(job["history"]) == 3
        answer = api.post("/predict", json={"text": "truly great and wonderful"}).json()
        assert answer["label"] == "positive" and answer["job_id"] == job["id"]
