"""Aliases through the real stack: several API processes, a real worker, requests under load,
and processes that learn of a change only through its notification."""

import io
import threading
from collections import Counter
from functools import partial

import httpx
import pytest
import torch

from tests.conftest import ADMIN_KEY, bearer
from tests.e2e.conftest import NEVER_POLLED, wait_for_job
from tests.utils.waiting import wait_until

pytestmark = pytest.mark.e2e

TEXTS = ["a wonderful delight", "a dull and awful mess"]


@pytest.fixture
def second_api(stack):
    """Another API process on the same database and artefacts, as behind a load balancer."""
    yield stack.start_api("api-2")
    stack.terminate("api-2")


@pytest.fixture(scope="module")
def unpolled_apis(stack):
    """Two more API processes that read the registry when they start and then only when a
    notification says it changed."""
    names = ("unpolled-1", "unpolled-2")
    yield [stack.start_api(name, **NEVER_POLLED) for name in names]
    for name in names:
        stack.terminate(name)


def train_job(api, stack, dataset_id: str, name: str, seed: int = 0) -> dict:
    """A text job of `name`, trained by the worker; the job, as the API first says succeeded."""
    created = api.post(
        "/jobs",
        json={
            "task": "text_sentiment",
            "dataset_id": dataset_id,
            "name": name,
            "seed": seed,
            "model": {"arch": "bag_of_embeddings"},
            "text": {"min_freq": 1},
            "hyperparameters": {"epochs": 2, "batch_size": 8, "optimizer": "adam", "lr": 0.05},
        },
    )
    job = wait_for_job(api, stack, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return job


def train_version(api, stack, dataset_id: str, seed: int, name: str = "swap") -> dict:
    job = train_job(api, stack, dataset_id, name, seed)
    return api.get(f"/models/{job['model_id']}").json()


def upload(api, name: str, data: bytes) -> str:
    return api.post("/datasets", files={"file": (name, data)}).json()["id"]


def prediction(url: str, headers: dict, model: str | None = None) -> dict:
    body = {"text": TEXTS[0]} | ({"model": model} if model else {})
    answer = httpx.post(f"{url}/predict", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
def predict_key_created(api) -> dict:
    """A predict key with room for the load below (the default limit is 50 requests/s)."""
    created = api.post("/keys", json={"scope": "predict", "rate_limit_per_second": 100_000})
    return created.json()


@pytest.fixture
def predict_key(predict_key_created) -> dict[str, str]:
    return bearer(predict_key_created["key"])


def share(api, name: str, key: dict) -> None:
    """Let the key predict with the admin's model name: a predict key reads only those."""
    assert api.post(f"/models/{name}/shares", json={"key_id": key["id"]}).status_code == 201


def serves(url: str, model: str, version_id: str, headers: dict) -> bool:
    answer = httpx.post(f"{url}/predict", json={"text": TEXTS[0], "model": model}, headers=headers)
    # A 404 while the version's name has not reached this process yet: wait on.
    return answer.status_code == 200 and answer.json()["model_id"] == version_id


def wait_until_served(urls, model: str, version_id: str, headers: dict) -> None:
    for url in urls:
        wait_until(
            partial(serves, url, model, version_id, headers),
            timeout=15,
            what=f"{url} to serve {version_id} for {model}",
        )


class Load:
    """Threads posting to every API until stopped; counts answers by status and model."""

    def __init__(self, urls: list[str], model: str, headers: dict, threads_per_url: int = 3):
        self.headers = headers
        self.answers: Counter = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url, model))
            for url in urls
            for _ in range(threads_per_url)
        ]

    def _run(self, url: str, model: str) -> None:
        with httpx.Client(base_url=url, headers=self.headers, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/predict", json={"texts": TEXTS, "model": model})
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text}")
                else:
                    self.answers[response.json()[0]["model_id"]] += 1

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


@pytest.mark.predicts
def test_alias_moves_under_load_fail_no_request_and_every_process_follows(
    api, stack, second_api, predict_key_created, predict_key, sentiment_csv
):
    dataset_id = upload(api, "swap.csv", sentiment_csv)
    first = train_version(api, stack, dataset_id, seed=0)
    second = train_version(api, stack, dataset_id, seed=1)
    share(api, "swap", predict_key_created)
    assert api.get(f"/models/{second['id']}").json()["aliases"] == ["latest"]
    urls = [stack.url, second_api]
    wait_until_served(urls, "swap", second["id"], predict_key)  # no production yet: latest

    assert api.put("/models/swap/aliases/production", json={"version_id": first["id"]}).is_success
    wait_until_served(urls, "swap@production", first["id"], predict_key)
    wait_until_served(urls, "swap", first["id"], predict_key)  # production now wins

    targets = [second, first] * 5
    other = httpx.Client(base_url=second_api, headers=bearer(ADMIN_KEY))
    with Load(urls, "swap@production", predict_key) as load:
        for move, target in enumerate(targets):
            via = api if move % 2 else other
            moved = via.put("/models/swap/aliases/production", json={"version_id": target["id"]})
            assert moved.status_code == 200, moved.text
            # Each version answers under load, through every process, before the next move.
            wait_until_served(urls, "swap@production", target["id"], predict_key)
    assert load.failures == []
    assert set(load.answers) == {first["id"], second["id"]} and sum(load.answers.values()) > 50
    wait_until_served(urls, "swap@production", first["id"], predict_key)

    rolled = api.post("/models/swap/aliases/production/rollback").json()
    assert rolled["to_version_id"] == second["id"] and rolled["action"] == "rolled_back"
    wait_until_served(urls, "swap@production", second["id"], predict_key)
    assert rolled["moved_by"] is not None  # the admin key's id
    history = api.get("/models/swap/aliases/production/history").json()
    assert len(history) == 1 + len(targets) + 1
    assert api.delete(f"/models/{second['id']}").status_code == 409

    weights = api.get(f"/models/{first['id']}/weights")
    checkpoint = torch.load(io.BytesIO(weights.content), weights_only=True)
    assert checkpoint["arch"] == "bag_of_embeddings" and checkpoint["classes"] == first["classes"]
    metrics = httpx.get(f"{second_api}/metrics", headers=bearer(ADMIN_KEY)).text
    assert 'route="/predict",status="200"' in metrics and "trainserve_batch_size_bucket" in metrics


@pytest.mark.predicts
def test_every_process_serves_a_job_as_soon_as_it_says_succeeded(
    api, stack, unpolled_apis, sentiment_csv, moods_csv
):
    reviews = train_job(api, stack, upload(api, "reviews.csv", sentiment_csv), "reviews")
    # No model named: the task's default, now the newest name (asked with the admin key,
    # which reads every name: a predict key's default is the newest name shared with it).
    # Asked of processes that would read the registry again only in an hour, the moment
    # the job says succeeded.
    admin = bearer(ADMIN_KEY)
    answers = [prediction(url, admin) for url in unpolled_apis]
    assert [a["job_id"] for a in answers] == [reviews["id"]] * 2

    moods = train_job(api, stack, upload(api, "moods.csv", moods_csv), "moods")
    answers = [prediction(url, admin) for url in unpolled_apis]
    assert [a["job_id"] for a in answers] == [moods["id"]] * 2
    assert all({t["label"] for t in a["top_k"]} == {"joy", "anger", "fear"} for a in answers)


@pytest.mark.predicts
def test_an_alias_move_reaches_the_other_processes_before_their_next_request(
    api, stack, unpolled_apis, predict_key_created, predict_key, sentiment_csv
):
    dataset_id = upload(api, "notified.csv", sentiment_csv)
    first = train_version(api, stack, dataset_id, seed=0, name="notified")
    second = train_version(api, stack, dataset_id, seed=1, name="notified")
    share(api, "notified", predict_key_created)
    one, two = unpolled_apis
    assert [prediction(url, predict_key, "notified")["model_id"] for url in (one, two)] == [
        second["id"]
    ] * 2  # latest, with no production yet
    for via, other, target in ((one, two, first), (two, one, second), (one, two, first)):
        moved = httpx.put(
            f"{via}/models/notified/aliases/production",
            json={"version_id": target["id"]},
            headers=bearer(ADMIN_KEY),
        )
        assert moved.status_code == 200, moved.text
        # The first request after the move, to the process that did not make it.
        assert prediction(other, predict_key, "notified")["model_id"] == target["id"]
        assert prediction(other, predict_key, "notified@production")["model_id"] == target["id"]
        assert prediction(via, predict_key, "notified")["model_id"] == target["id"]
