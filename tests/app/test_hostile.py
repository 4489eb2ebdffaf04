"""Every hostile input of tests/hostile.py gets its 4xx in-process, and nothing is stored."""

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.past_router import PastRouter
from tests.conftest import ADMIN_KEY, app_client, bearer
from tests.hostile import MiB, hostile_inputs, keyless_attacks, predict_attacks
from tests.utils.api import IMAGE_JOB, TOP_IMAGE, new_key, upload
from tests.utils.waiting import wait_until
from workers.runner import run_job

TEXT_JOB = {
    "task": "text_sentiment",
    "model": {"arch": "bag_of_embeddings"},
    "text": {"min_freq": 1},
    "hyperparameters": {"epochs": 1, "batch_size": 8},
}


@pytest.fixture
def small_limits(monkeypatch, embedded_settings):
    monkeypatch.setattr(embedded_settings, "max_upload_bytes", 4 * MiB)
    monkeypatch.setattr(embedded_settings, "max_decoded_bytes", 8 * MiB)
    return embedded_settings


def test_hostile_inputs_get_a_clear_4xx_and_store_nothing(small_limits, two_class_zip):
    image = TOP_IMAGE
    with app_client() as client:
        dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
        run_job(client.post("/jobs", json={**IMAGE_JOB, "dataset_id": dataset_id}).json()["id"])
        expected = client.post("/predict", files={"file": ("x.png", image)}).json()
        stored = sorted((small_limits.artifacts_dir / "datasets").iterdir())
        cases = hostile_inputs(small_limits.max_upload_bytes, small_limits.max_decoded_bytes)
        assert len(cases) >= 15
        for case in cases:
            response = client.post(case.path, **case.request_kwargs())
            assert response.status_code == case.status, (case.name, response.text[:300])
            assert case.detail in case.refusal(response), (case.name, response.text[:300])
        assert [d["id"] for d in client.get("/datasets").json()["items"]] == [dataset_id]
        assert sorted((small_limits.artifacts_dir / "datasets").iterdir()) == stored
        assert client.post("/predict", files={"file": ("x.png", image)}).json() == expected


def test_predict_limits_hold_through_fastapis_router_too(small_limits, two_class_zip):
    api = create_app()
    api.user_middleware = [m for m in api.user_middleware if m.cls is not PastRouter]
    with TestClient(api, headers=bearer(ADMIN_KEY)) as client:
        dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
        run_job(client.post("/jobs", json={**IMAGE_JOB, "dataset_id": dataset_id}).json()["id"])
        for case in predict_attacks(small_limits.max_predict_bytes) + keyless_attacks(MiB):
            response = client.post(case.path, **case.request_kwargs())
            assert response.status_code == case.status, (case.name, response.text[:300])
            assert case.detail in case.refusal(response), (case.name, response.text[:300])
        answer = client.post("/predict", files={"file": ("x.png", TOP_IMAGE)})
        assert answer.status_code == 200 and answer.json()["label"] == "top"


def unread_body_answer(
    client: TestClient, path: str, length: int, headers: dict[bytes, bytes]
) -> dict:
    """What the app answers a POST of a JSON body of `length` bytes that it must not read:
    receive() fails the test."""
    messages: list[dict] = []

    async def receive() -> dict:
        raise AssertionError(f"the body of POST {path} was read")

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % length),
            *headers.items(),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    client.portal.call(client.app, scope, receive, send)
    return {"status": messages[0]["status"], "headers": dict(messages[0]["headers"])}


@pytest.mark.parametrize("path", ["/datasets", "/jobs", "/keys", "/predict", "/v2/models/m/infer"])
def test_a_body_without_a_valid_key_is_refused_before_it_is_read(embedded_settings, path):
    with app_client() as client:
        for headers in ({}, {b"authorization": b"Bearer ts_unknown"}):
            answer = unread_body_answer(client, path, 1000, headers)  # under every cap
            assert answer["status"] == 401
            assert answer["headers"][b"www-authenticate"] == b"Bearer"
        # With the key, a body over the route's cap is refused unread too.
        admin = {b"authorization": f"Bearer {ADMIN_KEY}".encode()}
        assert unread_body_answer(client, path, 600 * MiB, admin)["status"] == 413


def test_a_key_keeps_at_most_its_cap_of_models_in_service(
    monkeypatch, embedded_settings, sentiment_csv
):
    monkeypatch.setattr(embedded_settings, "model_cache_size", 1)
    monkeypatch.setattr(embedded_settings, "max_models_per_key", 1)
    with app_client() as client:
        dataset_id = upload(client, sentiment_csv, "t.csv").json()["id"]
        for name in ("a", "b", "c", "d"):  # d, the newest, is the task's default
            job = client.post("/jobs", json={**TEXT_JOB, "dataset_id": dataset_id, "name": name})
            run_job(job.json()["id"])
        # The default loads in the background once the registry is read: wait for it, so
        # that the requests below find it in service and not loading alongside them.
        wait_until(lambda: client.get("/readyz").json().get("models") == "1 model(s) loaded")
        predict_key = new_key(client, "predict")
        key = predict_key["key"]
        for name in ("a", "b", "c"):
            shared = client.post(f"/models/{name}/shares", json={"key_id": predict_key["id"]})
            assert shared.status_code in (200, 201), shared.text
        for name in ("a", "b", "c"):
            answer = client.post(
                "/predict", json={"text": "great", "model": name}, headers=bearer(key)
            )
            assert answer.status_code == 200 and answer.json()["model_name"] == name
        # a was let go when b was asked, and the cache of one dropped it at a later load.
        loads_of_a = model_loads(client, "a")  # one or two: it was the default a while
        client.post("/predict", json={"text": "great", "model": "a"}, headers=bearer(key))
        assert model_loads(client, "a") == loads_of_a + 1  # loaded again: it had gone


def model_loads(client: TestClient, name: str) -> float:
    metrics = client.app.state.metrics.registry
    return metrics.get_sample_value("trainserve_model_load_seconds_count", {"model": name})
