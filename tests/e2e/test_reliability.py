"""Jobs survive what breaks in production: a killed worker, a Redis that restarts empty,
a client that reconnects, database connections lost; cancel stops a running job and frees
the worker."""

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from itertools import islice

import httpx
import psycopg
import pytest
import redis
from sqlalchemy import make_url

from app.store.db import PING_AFTER_IDLE_S
from tests.e2e.conftest import (
    POSTGRES_ADMIN,
    Stack,
    fresh_postgres_database,
    mnist_upload,
    wait_for_job,
)
from tests.utils.waiting import wait_until

pytestmark = pytest.mark.e2e


def mnist_job(dataset_id: str, epochs: int, **spec) -> dict:
    return {
        "task": "image_classification",
        "dataset_id": dataset_id,
        "model": {"arch": "tutorial_cnn"},
        "hyperparameters": {"epochs": epochs, "batch_size": 64, "lr": 0.05},
        **spec,
    }


def submit(api, spec: dict, **headers) -> dict:
    response = api.post("/jobs", json=spec, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


def wait_for(api, job_id: str, condition, timeout: float = 120) -> dict:
    """The job once condition(job) holds."""

    def job_if_there() -> dict | None:
        job = api.get(f"/jobs/{job_id}").json()
        return job if condition(job) else None

    return wait_until(
        job_if_there, timeout, what=lambda: f"job {job_id}: {api.get(f'/jobs/{job_id}').json()}"
    )


def wait_for_step_of(api, job_id: str, epoch: int) -> None:
    """Until the worker has recorded a training step of `epoch` (counted from 1)."""
    with api.stream("GET", f"/jobs/{job_id}/events") as stream:
        for event in iter_events(stream):
            if event["event"] == "step" and json.loads(event["data"])["epoch"] >= epoch:
                return
    raise AssertionError(f"job {job_id} ended before a step of epoch {epoch}")


def test_a_stopped_or_killed_worker_is_replaced_and_the_job_resumes(api, stack, mnist_dataset):
    job_id = submit(api, mnist_job(mnist_dataset, epochs=5))["id"]
    wait_for(api, job_id, lambda j: j["epoch"] >= 1)
    # A graceful stop (a deploy): the job goes back to the queue at once.
    assert stack.terminate("worker") < 15
    handed_back = api.get(f"/jobs/{job_id}").json()
    assert handed_back["status"] == "queued" and handed_back["attempt"] == 0
    stack.start_worker()
    resumed = wait_for(api, job_id, lambda j: j["epoch"] > handed_back["epoch"])
    wait_for_step_of(api, job_id, resumed["epoch"] + 1)  # into the next epoch
    # A lost machine: nobody says anything; the lease runs out and the job is re-queued.
    stack.kill("worker")
    done_at_kill = api.get(f"/jobs/{job_id}").json()["epoch"]
    stack.start_worker()
    job = wait_for_job(api, stack, job_id)
    assert job["status"] == "succeeded", stack.logs()
    with api.stream("GET", f"/jobs/{job_id}/events") as stream:
        changes = [e["data"] for e in read_events(stream) if e["event"] == "status"]
    assert job["attempt"] == 2, (changes, stack.logs())
    # After the last checkpoint (recorded, or written just before the kill and recorded on
    # resume): only the interrupted epoch was redone.
    assert job["resumed_from_epoch"] in (done_at_kill, done_at_kill + 1)
    assert [h["epoch"] for h in job["history"]] == [1, 2, 3, 4, 5]
    assert job["best_val_accuracy"] > 0.85


def iter_events(response: httpx.Response) -> Iterator[dict]:
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line:
            key, _, value = line.partition(": ")
            fields[key] = value
        elif "id" in fields:
            yield {"id": int(fields["id"]), "event": fields["event"], "data": fields["data"]}
            fields = {}


def read_events(response: httpx.Response, limit: int | None = None) -> list[dict]:
    return list(islice(iter_events(response), limit))


def test_a_cancelled_running_job_stops_and_the_worker_takes_the_next(api, stack, mnist_dataset):
    long_job = submit(api, mnist_job(mnist_dataset, epochs=50))["id"]
    next_job = submit(api, mnist_job(mnist_dataset, epochs=1, seed=1))["id"]
    with api.stream("GET", f"/jobs/{long_job}/events") as stream:
        assert any(e["event"] == "step" for e in read_events(stream, limit=5))
    cancel = api.post(f"/jobs/{long_job}/cancel")
    asked = time.monotonic()
    assert cancel.status_code == 202 and cancel.json()["status"] == "cancelling"
    cancelled = wait_for(api, long_job, lambda j: j["status"] == "cancelled")
    latency = time.monotonic() - asked
    assert latency < 10 and cancelled["end_reason"] == "cancelled" and cancelled["model_id"] is None
    assert api.post(f"/jobs/{long_job}/cancel").status_code == 200
    following = wait_for_job(api, stack, next_job)
    assert following["status"] == "succeeded", stack.logs()


def test_an_event_stream_resumed_with_last_event_id_misses_nothing(api, stack, mnist_dataset):
    job_id = submit(api, mnist_job(mnist_dataset, epochs=2, seed=2))["id"]
    with api.stream("GET", f"/jobs/{job_id}/events") as stream:
        first = read_events(stream, limit=10)  # then the client drops
    wait_for(api, job_id, lambda j: j["epoch"] >= 1)  # the rest of epoch 1 happened meanwhile
    headers = {"Last-Event-ID": str(first[-1]["id"])}
    with api.stream("GET", f"/jobs/{job_id}/events", headers=headers) as stream:
        rest = read_events(stream)  # to the end of the job
    received = first + rest
    assert [e["id"] for e in received] == list(range(1, len(received) + 1))  # each exactly once
    assert json.loads(received[-1]["data"])["status"] == "succeeded"
    assert [e["event"] for e in received].count("epoch") == 2
    with api.stream("GET", f"/jobs/{job_id}/events") as stream:
        assert read_events(stream) == received  # a replay from the start is the same


def test_the_same_idempotency_key_twice_makes_one_job(api, stack, mnist_dataset):
    spec = mnist_job(mnist_dataset, epochs=1, seed=4)
    first = submit(api, spec, **{"Idempotency-Key": "retry-me"})
    second = api.post("/jobs", json=spec, headers={"Idempotency-Key": "retry-me"})
    assert second.status_code == 200 and second.json()["id"] == first["id"]
    listed = api.get("/jobs", params={"limit": 200}).json()["items"]
    keyed = [j for j in listed if api.get(f"/jobs/{j['id']}").json()["spec"] == first["spec"]]
    assert len(keyed) == 1
    assert api.post(f"/jobs/{first['id']}/cancel").status_code in (200, 202)
    assert wait_for_job(api, stack, first["id"])["status"] == "cancelled"


class RedisServer:
    """A Redis of the test's own, that keeps nothing on disk, to restart at will. It listens
    on a Unix socket only: a TCP port would be free for anyone between stop and start."""

    def __init__(self, folder):
        self.folder, self.socket = folder, folder / "redis.sock"
        self.url = f"redis+socket://{self.socket}"
        self.client = redis.Redis(unix_socket_path=str(self.socket))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_until(self.answers, timeout=10, what="redis-server to start")

    def answers(self) -> bool:
        try:
            return self.client.ping()
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def messages(self) -> int:
        return self.client.llen("trainserve")


def test_a_job_queued_when_redis_restarts_empty_still_runs(tmp_path, mnist):
    broker = RedisServer(tmp_path)
    broker.start()
    with fresh_postgres_database() as database_url:
        own = Stack(tmp_path, database_url, broker.url)
        try:
            own.start_api()  # no worker yet: the job waits in Redis
            with own.client(timeout=60) as client:
                upload = mnist_upload(mnist, 1000)
                dataset_id = client.post("/datasets", files=upload).json()["id"]
                job_id = submit(client, mnist_job(dataset_id, epochs=1))["id"]
                assert broker.messages() == 1
                broker.stop()
                broker.start()  # empty: the message is gone
                assert broker.messages() == 0
                own.start_worker()
                job = wait_for_job(client, own, job_id)
                assert job["status"] == "succeeded", own.logs()
                assert job["attempt"] == 1
        finally:
            own.stop()
            broker.stop()


def test_connections_the_database_dropped_are_replaced_unseen(tmp_path, redis_url):
    """As after a database restart: every connection the API holds is gone; the requests
    after it are answered as if nothing happened (an idle connection is pinged first)."""
    with fresh_postgres_database() as database_url:
        own = Stack(tmp_path, database_url, redis_url)
        # Nothing but these requests in the API reads the database meanwhile: a background
        # read would meet the lost connection first, and SQLAlchemy then replaces them all.
        quiet = {"KEY_CACHE_SECONDS": 60, "SWEEP_SECONDS": 3600, "REGISTRY_POLL_SECONDS": 3600}
        own.env |= {f"TRAINSERVE_{name}": str(seconds) for name, seconds in quiet.items()}
        try:
            own.start_api()
            with own.client(timeout=60) as client:
                job_reads = ("/jobs", "/jobs?limit=1", f"/jobs/{uuid.uuid4().hex}")
                assert [client.get(path).status_code for path in job_reads] == [200, 200, 404]
                drop_connections(make_url(database_url).database)
                time.sleep(2 * PING_AFTER_IDLE_S)  # what makes a connection idle
                answers = [client.get(path).status_code for path in job_reads]
                answers.append(client.post("/keys", json={"scope": "train"}).status_code)
                assert answers == [200, 200, 404, 201], own.log("api")
        finally:
            own.stop()  # and its log holds no traceback


def drop_connections(database: str) -> None:
    """Every connection to the database ended by the server, as a restart ends them."""
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        others = "datname = %s AND pid <> pg_backend_pid()"
        admin.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {others}", (database,)
        )
        wait_until(
            lambda: (
                not admin.execute(
                    f"SELECT 1 FROM pg_stat_activity WHERE {others}", (database,)
                ).fetchall()
            ),
            timeout=10,
            what="the database's connections to end",
        )
