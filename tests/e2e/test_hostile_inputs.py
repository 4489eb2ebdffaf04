"""The hostile inputs against the real stack, while /predict keeps answering correctly."""

import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import bearer
from tests.e2e.conftest import (
    E2E_MAX_DECODED_BYTES,
    E2E_MAX_UPLOAD_BYTES,
    SENTIMENT_JOB,
    wait_for_job,
)
from tests.hostile import hostile_inputs, wrong_scope_attacks
from tests.utils.api import IMAGE_JOB, CountedBody

pytestmark = pytest.mark.e2e

PROBES = ["truly great and wonderful", "a dull and awful mess"]


class PredictWatch(threading.Thread):
    """Asks /predict the probes every 0.1 s with a predict key; keeps every answer."""

    def __init__(self, api, expected: list):
        super().__init__(daemon=True)
        self.api, self.expected = api, expected
        self.answers: list[tuple[int, object]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            response = self.api.post("/predict", json={"texts": PROBES})
            self.answers.append((response.status_code, response.json()))
            time.sleep(0.1)


@pytest.mark.predicts
def test_hostile_inputs_leave_the_service_answering(api, stack, sentiment_csv, two_class_zip):
    # An image model too, so that hostile images reach the decoder.
    images = api.post("/datasets", files={"file": ("d.zip", two_class_zip)}).json()
    image_job = api.post("/jobs", json={**IMAGE_JOB, "dataset_id": images["id"]}).json()
    dataset = api.post("/datasets", files={"file": ("t.csv", sentiment_csv)}).json()
    created = api.post("/jobs", json={**SENTIMENT_JOB, "dataset_id": dataset["id"]})
    job = wait_for_job(api, stack, created.json()["id"])
    assert wait_for_job(api, stack, image_job["id"])["status"] == "succeeded"
    predict_key = api.post("/keys", json={"scope": "predict"}).json()
    # A predict key answers from the model names shared with it: this job's.
    name = api.get(f"/models/{job['model_id']}").json()["name"]
    shared = api.post(f"/models/{name}/shares", json={"key_id": predict_key["id"]})
    assert shared.status_code == 201
    with stack.client(predict_key["key"]) as predictor:
        expected = predictor.post("/predict", json={"texts": PROBES, "model": job["id"]}).json()
        assert [answer["label"] for answer in expected] == ["positive", "negative"]
        stored = stack.stored("datasets/")
        datasets = api.get("/datasets", params={"limit": 200}).json()["items"]

        watch = PredictWatch(predictor, expected)
        watch.start()
        cases = hostile_inputs(E2E_MAX_UPLOAD_BYTES, E2E_MAX_DECODED_BYTES)
        for case in cases + wrong_scope_attacks(E2E_MAX_UPLOAD_BYTES, predict_key["key"]):
            response = api.post(case.path, **case.request_kwargs())
            assert response.status_code == case.status, (case.name, response.text[:300])
            assert case.detail in case.refusal(response), (case.name, response.text[:300])
        watch.done.set()
        watch.join()

        assert len(watch.answers) >= 5
        assert all(answer == (200, expected) for answer in watch.answers), watch.answers
        assert predictor.post("/predict", json={"texts": PROBES}).json() == expected
    assert api.get("/datasets", params={"limit": 200}).json()["items"] == datasets
    assert stack.stored("datasets/") == stored
    assert api.get("/healthz").json() == {"status": "ok"}


def answer_to_headers_alone(url: str, path: str, headers: str) -> bytes:
    """What the server answers a POST that announces 100 MiB and sends none of it."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {100 << 20}\r\n{headers}\r\n".encode()
        )
        return sock.recv(65536)  # a timeout here: the server waits for the body


@pytest.mark.predicts
@pytest.mark.parametrize("path", ["/datasets", "/jobs", "/keys", "/predict"])
def test_a_body_without_a_key_is_refused_before_it_is_sent(stack, path):
    for headers in ("", "authorization: Bearer ts_unknown\r\n"):
        answer = answer_to_headers_alone(stack.url, path, headers)
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
        assert b"www-authenticate: Bearer" in answer


STREAMED = 64 << 20  # over every route's cap: a server that read it all would answer 413


@pytest.mark.predicts
@pytest.mark.parametrize(
    ("path", "scope", "needs"),
    [
        ("/datasets", "predict", "needs 'train' or 'admin'"),
        ("/keys", "train", "needs 'admin' or 'admin'"),
        ("/predict", "train", "needs 'predict' or 'admin'"),  # past FastAPI's router
        ("/v2/models/any/infer", "deploy", "needs 'predict' or 'admin'"),  # V2's shape
    ],
)
def test_a_body_for_a_key_of_another_scope_is_refused_before_it_is_sent(
    api, stack, path, scope, needs
):
    key = api.post("/keys", json={"scope": scope}).json()["key"]
    body = CountedBody(bytes(STREAMED))
    # Chunked, no Expect: the client writes until the server answers and closes.
    with httpx.Client(base_url=stack.url, headers=bearer(key), timeout=60) as client:
        response = client.post(path, content=body)
    assert response.status_code == 403, response.text[:300]
    refusal = response.json()
    assert needs in (refusal["error"] if path.startswith("/v2/") else refusal["detail"])
    assert body.sent < STREAMED // 4, f"{body.sent} of {STREAMED} bytes sent before the 403"


def test_a_streamed_body_of_the_right_scope_is_read(api, stack, sentiment_csv):
    """What the refusal above spares is the body of a key that may not send it: a train
    key's upload, streamed the same way, is read whole and stored."""
    key = api.post("/keys", json={"scope": "train"}).json()["key"]
    form = httpx.Request("POST", stack.url, files={"file": ("streamed.csv", sentiment_csv)})
    body = CountedBody(form.read(), chunk=1 << 10)
    with httpx.Client(base_url=stack.url, headers=bearer(key), timeout=60) as client:
        response = client.post(
            "/datasets", content=body, headers={"content-type": form.headers["content-type"]}
        )
    assert response.status_code in (200, 201), response.text[:300]
    assert body.sent == len(body.content)
