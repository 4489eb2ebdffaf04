"""Two "machines" in one test: an API and two Celery workers whose local folders differ
and who share nothing but PostgreSQL, Redis and an S3-compatible store (moto's server,
over HTTP). Jobs spread over both workers, a model trained on one is served by the API,
a worker killed mid-job has its job resumed on the other from the checkpoint in the
store, a GPU job with no GPU worker waits and says why, and no worker's parent process
ever loads torch (CUDA-safe forks)."""

import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from app.broker import GPU_QUEUE, QUEUE
from app.store.tables import ENDED
from tests.e2e.conftest import (
    REDIS_URL,
    Stack,
    fresh_postgres_database,
    mnist_upload,
    wait_for_job,
)
from tests.utils.s3 import BucketPrefix
from tests.utils.waiting import wait_until

pytestmark = pytest.mark.e2e
MACHINES = ("a", "b")
PREFIX = "cluster"  # the bucket's prefix of this cluster's artefacts


def _own_redis_database(url: str) -> str:
    """The next database number of the session's Redis: the session's stack has a worker
    on its own, which would take this cluster's messages."""
    base, _, number = url.rpartition("/")
    return f"{base}/{(int(number) + 1) % 16}"


def machine_env(folder: Path, machine: str) -> dict[str, str]:
    """A machine's own local folders: nothing in them is seen by another."""
    return {
        "TRAINSERVE_ARTIFACTS_DIR": str(folder / machine / "artifacts"),
        "TRAINSERVE_CACHE_DIR": str(folder / machine / "cache"),
    }


def worker_name(machine: str) -> str:
    return f"worker-{machine}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3):
    broker = _own_redis_database(REDIS_URL)
    redis.Redis.from_url(broker).flushdb()
    with fresh_postgres_database() as database_url:
        folder = tmp_path_factory.mktemp("cluster")
        stack = Stack(folder, database_url, broker, bucket=BucketPrefix(s3, PREFIX))
        stack.env |= {
            "TRAINSERVE_WORKER_SEEN_SECONDS": "3",
            "TRAINSERVE_MAX_CONCURRENT_JOBS": "0",
            "TRAINSERVE_TORCH_THREADS": "1",
            # A store that stops answering is given up on in seconds (4 tries of 2 s).
            "TRAINSERVE_S3_TIMEOUT_SECONDS": "2",
        }
        for machine in MACHINES:
            stack.start_worker(worker_name(machine), **machine_env(folder, machine))
        stack.start_api(**machine_env(folder, "api"))
        yield stack
        stack.stop()
        redis.Redis.from_url(broker).flushdb()


@pytest.fixture(scope="module")
def api(cluster):
    with cluster.client() as client:
        wait_until(lambda: len(alive_workers(client)) == 2, timeout=180, what="both workers")
        yield client


@pytest.fixture(scope="module")
def dataset_id(api, mnist) -> str:
    response = api.post("/datasets", files=mnist_upload(mnist, 1500, 300))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def alive_workers(api) -> dict[str, dict]:
    return {w["name"].split("@")[0]: w for w in api.get("/workers").json()["items"] if w["alive"]}


def job_spec(dataset_id: str, epochs: int = 1, **spec) -> dict:
    return {
        "task": "image_classification",
        "dataset_id": dataset_id,
        "model": {"arch": "tutorial_cnn"},
        "hyperparameters": {"epochs": epochs, "batch_size": 64, "lr": 0.05},
        **spec,
    }


def submit(api, spec: dict) -> dict:
    response = api.post("/jobs", json=spec)
    assert response.status_code == 201, response.text
    return response.json()


def machine_of(job: dict) -> str:
    return job["worker"].split("@")[0]


def test_the_workers_report_their_queues_and_device(api):
    workers = alive_workers(api)
    assert set(workers) == {worker_name(m) for m in MACHINES}
    for worker in workers.values():
        assert worker["queues"] == [QUEUE] and worker["device"] == "cpu" and worker["gpus"] == []


def test_jobs_spread_over_both_machines_and_each_downloads_a_dataset_once(api, cluster, dataset_id):
    stored = cluster.stored("datasets/")
    assert len(stored) == 1  # in the bucket, and in no machine's folder
    assert not list((cluster.folder / "api" / "artifacts").glob("datasets/*"))
    jobs = [submit(api, job_spec(dataset_id, seed=seed)) for seed in range(4)]
    ended = [wait_for_job(api, cluster, job["id"]) for job in jobs]
    assert all(job["status"] == "succeeded" for job in ended), ended
    assert {machine_of(job) for job in ended} == {worker_name(m) for m in MACHINES}
    for machine in MACHINES:
        log = (cluster.folder / f"{worker_name(machine)}.log").read_text()
        downloads = log.count(f"artefact {stored[0]}: downloading")
        ran = sum(machine_of(job) == worker_name(machine) for job in ended)
        assert downloads == 1, f"{worker_name(machine)} ran {ran} jobs, downloaded {downloads}x"


def test_a_model_trained_on_one_machine_is_served_by_the_api(api, cluster, dataset_id, mnist):
    job = wait_for_job(api, cluster, submit(api, job_spec(dataset_id, name="remote"))["id"])
    assert job["status"] == "succeeded", job  # its checkpoint in the bucket: wait_for_job
    model = api.get(f"/models/{job['id']}").json()
    digit = io.BytesIO()
    Image.fromarray(np.asarray(mnist["t10k-images-idx3"][0], dtype=np.uint8)).save(digit, "PNG")
    answer = api.post(
        "/predict", files={"file": ("d.png", digit.getvalue())}, data={"model": "remote"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["job_id"] == job["id"]
    # Read from the store into the API machine's cache, checked against its sha256.
    assert (cluster.folder / "api" / "cache" / model["sha256"][:2] / model["sha256"]).is_file()
    weights = api.get(f"/models/{model['id']}/weights")
    assert weights.status_code == 200
    assert weights.content == cluster.bucket.read(model["checkpoint_path"])


def test_a_job_of_a_killed_machine_resumes_on_the_other_from_the_store(api, cluster, dataset_id):
    job_id = submit(api, job_spec(dataset_id, epochs=6))["id"]

    def running_past_first_epoch() -> dict | None:
        job = api.get(f"/jobs/{job_id}").json()
        return job if job["status"] == "running" and job["epoch"] >= 1 else None

    running = wait_until(running_past_first_epoch, timeout=240, what=f"job {job_id}'s epoch 1")
    lost = machine_of(running)
    assert alive_workers(api)[lost]["job_id"] == job_id  # GET /workers: the job it runs
    cluster.kill(lost)
    ended = wait_for_job(api, cluster, job_id)
    assert ended["status"] == "succeeded" and ended["attempt"] == 2, ended
    assert machine_of(ended) != lost and ended["resumed_from_epoch"] >= 1
    assert [epoch["epoch"] for epoch in ended["history"]] == list(range(1, 7))
    machine = lost.removeprefix("worker-")
    cluster.start_worker(lost, **machine_env(cluster.folder, machine))  # back for what follows
    wait_until(lambda: lost in alive_workers(api), timeout=180, what=f"{lost} back")


def test_a_store_unreachable_during_a_checkpoint_write_retries_the_attempt(
    api, cluster, s3, dataset_id
):
    """moto stops answering (SIGSTOP) while a job trains: the epoch's upload times out,
    the attempt fails and is retried once the store is back, and no row ever names an
    object that is not whole."""
    job_id = submit(api, job_spec(dataset_id, epochs=3, limits={"max_attempts": 5}))["id"]
    wait_until(lambda: api.get(f"/jobs/{job_id}").json()["epoch"] >= 1, timeout=240, what="epoch 1")
    s3.pause()
    try:

        def failed_attempt() -> dict | None:
            job = api.get(f"/jobs/{job_id}").json()
            return job if job["attempt"] >= 2 or job["status"] in ENDED else None

        retried = wait_until(failed_attempt, timeout=120, what="the attempt to fail")
    finally:
        s3.resume()
    assert retried["error"] and "training crashed" in retried["error"], retried
    ended = wait_for_job(api, cluster, job_id)
    assert ended["status"] == "succeeded" and ended["attempt"] >= 2, ended
    assert [epoch["epoch"] for epoch in ended["history"]] == [1, 2, 3]
    model = api.get(f"/models/{job_id}").json()
    stored = cluster.bucket.read(model["checkpoint_path"])
    assert hashlib.sha256(stored).hexdigest() == model["sha256"]
    cluster.new_faults()  # the failed attempt's traceback, logged on purpose: passed over


def test_a_gpu_job_without_a_gpu_worker_waits_and_says_why(api, dataset_id):
    auto = submit(api, job_spec(dataset_id))  # no GPU worker seen: cpu, and the job says why
    assert auto["spec"]["resources"]["device"] == "cpu"
    assert "no GPU worker was seen" in auto["spec_sources"]["resources.device"]
    job = submit(api, job_spec(dataset_id, resources={"device": "cuda", "gpus": 2}))
    assert job["queue"] == GPU_QUEUE

    def waiting() -> dict | None:
        seen = api.get(f"/jobs/{job['id']}").json()
        return seen if seen["waiting"] else None

    seen = wait_until(waiting, timeout=30, what="the GPU job to say why it waits")
    assert seen["status"] == "queued" and seen["worker"] is None
    assert seen["waiting"] == f"no worker for queue {GPU_QUEUE} seen in the last 3 s"
    assert api.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"


def test_no_worker_parent_loads_torch_and_their_children_do(cluster, api):
    """Celery's parent forks the pool's children: a parent that loaded torch could have
    initialised CUDA before a fork (pytorch#40403). /proc/PID/maps lists the libraries a
    process has loaded."""
    for machine in MACHINES:
        parent = cluster.processes[worker_name(machine)].pid
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        assert children, f"{worker_name(machine)} has no pool child"
        assert not re.search(r"libtorch|libcuda", Path(f"/proc/{parent}/maps").read_text())
        assert any("libtorch" in Path(f"/proc/{child}/maps").read_text() for child in children)
