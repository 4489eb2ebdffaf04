"""Requests to the API that several test modules make: an upload, a key, a job spec, a
trained version, and a streamed body that counts what was sent of it."""

import numpy as np

from tests.conftest import class_pattern, png_bytes
from workers.runner import run_job

IMAGE_JOB = {
    "task": "image_classification",
    "model": {"arch": "tutorial_cnn"},
    "hyperparameters": {"epochs": 2, "batch_size": 8, "lr": 0.05},
}
# An image of class "top" for the networks trained on the two_class_zip fixture.
TOP_IMAGE = png_bytes(class_pattern(0, 16, np.random.default_rng(5)))


class CountedBody:
    """`content` as a request body streamed in chunks (chunked, no Expect), counting the
    bytes the client took of it: what the server let it send before answering (0
    in-process while the app read none)."""

    def __init__(self, content: bytes = bytes(1 << 18), chunk: int = 1 << 16):
        self.content, self.chunk, self.sent = memoryview(content), chunk, 0

    def __iter__(self):
        while self.sent < len(self.content):
            piece = self.content[self.sent : self.sent + self.chunk]
            self.sent += len(piece)
            yield bytes(piece)


def upload(client, data: bytes, filename: str, headers: dict | None = None, **form):
    return client.post("/datasets", files={"file": (filename, data)}, data=form, headers=headers)


def new_key(client, scope: str, **limits) -> dict:
    response = client.post("/keys", json={"scope": scope, "name": f"{scope} test", **limits})
    assert response.status_code == 201, response.text
    return response.json()


def train(
    client, dataset_id: str, name: str = "shapes", seed: int = 0, headers: dict | None = None
) -> dict:
    """An image job trained here, by the worker's code without Celery; its model version.
    `headers` send another key than the client's."""
    job = client.post(
        "/jobs",
        json={**IMAGE_JOB, "dataset_id": dataset_id, "name": name, "seed": seed},
        headers=headers,
    ).json()
    run_job(job["id"])
    return client.get(f"/models/{job['id']}", headers=headers).json()
