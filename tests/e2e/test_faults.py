"""Faults across machines, each really done to a running service: the database restarted
while a job trains, a worker frozen past its lease while another takes its job, a worker
whose cache disk is full. (The store unreachable during a checkpoint write is in
test_cluster.py.)"""

import hashlib
import re
import signal
import time
from pathlib import Path

import psycopg
import pytest

from app.store.storage import job_prefix
from tests.e2e.conftest import Stack, fresh_postgres_database, mnist_upload, wait_for_job
from tests.e2e.test_reliability import RedisServer, mnist_job, submit, wait_for
from tests.utils.postgres import private_postgres
from tests.utils.s3 import BucketPrefix, moto_server
from tests.utils.waiting import wait_until

pytestmark = pytest.mark.e2e
# Sweeps ten times as often as heartbeats: once the database is back, a sweep most likely
# comes before the worker's next heartbeat, and must not take the lease that no heartbeat
# could renew meanwhile.
RACED_LEASES = {
    "TRAINSERVE_LEASE_SECONDS": "4",
    "TRAINSERVE_HEARTBEAT_SECONDS": "2",
    "TRAINSERVE_SWEEP_SECONDS": "0.2",
}
OUTAGE_S = 8  # twice the lease: no worker can renew one meanwhile
# Each part of a process that needs the database says once that it is unreachable, and
# once that it is back: a handful of lines for an outage, not one per request or beat.
OUTAGE_LINE = re.compile(r"the database is (still )?unreachable")
WORKERS = ("worker-a", "worker-b")  # each its own Celery node, as on two machines
# The one line a worker thawed after its lease was taken writes as its attempt stops.
STALE_STOP = re.compile(r"attempt (?P<attempt>\d+) stops, writing nothing more")


@pytest.fixture
def broker(tmp_path):
    """A Redis of the test's own: the session's worker must not take this test's jobs."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def whole_log(stack: Stack, name: str) -> str:
    return (stack.folder / f"{name}.log").read_text(errors="replace")


def outage_answers(client, job_id: str, dataset_id: str) -> list[tuple[str, int, str | None]]:
    """What the API answers, while the database is down, to a job's reads and a new job:
    (request, status, Retry-After), each OUTAGE_S long."""
    requests = {
        "GET /jobs/{id}": lambda: client.get(f"/jobs/{job_id}"),
        "GET /jobs": lambda: client.get("/jobs"),
        "POST /jobs": lambda: client.post("/jobs", json=mnist_job(dataset_id, epochs=1)),
        "GET /readyz": lambda: client.get("/readyz"),
    }
    answers = []
    stopped = time.monotonic()
    while time.monotonic() - stopped < OUTAGE_S:
        for name, send in requests.items():
            answer = send()
            answers.append((name, answer.status_code, answer.headers.get("retry-after")))
        time.sleep(0.2)
    return answers


def test_a_database_restarted_while_a_job_trains(tmp_path, broker, mnist):
    """PostgreSQL stopped (`pg_ctl stop -m fast`) for twice the lease while a job trains,
    then started again: meanwhile the API answers 503 with Retry-After (never a 500), the
    training waits at its epoch's end with its steps kept; afterwards the API answers
    again, the same attempt finishes (no epoch redone, every step stored once), and the
    logs hold no traceback, only a few one-line notices."""
    with private_postgres() as postgres:
        own = Stack(tmp_path, postgres.url, broker.url)
        own.env |= RACED_LEASES
        try:
            # One torch thread: with one per core, a busy machine made epochs of a second
            # take half a minute, and the outage should find training at an epoch's end.
            own.start_worker(TRAINSERVE_TORCH_THREADS="1")
            own.start_api()
            with own.client(timeout=60) as client:
                upload = mnist_upload(mnist, 1000, 300)
                dataset_id = client.post("/datasets", files=upload).json()["id"]
                job_id = submit(client, mnist_job(dataset_id, epochs=5))["id"]
                wait_for(client, job_id, lambda j: j["epoch"] >= 1, timeout=240)
                postgres.stop()
                answers = outage_answers(client, job_id, dataset_id)
                postgres.start()
                recovered_in = time.monotonic()
                wait_until(
                    lambda: client.get(f"/jobs/{job_id}").status_code == 200,
                    timeout=30,
                    what="the API to read the job again",
                )
                recovered_in = time.monotonic() - recovered_in
                job = wait_for_job(client, own, job_id)
                loss = client.get(
                    f"/jobs/{job_id}/metrics", params={"name": "loss", "max_points": 5000}
                ).json()["points"]
                # Ready again once the job's model is loaded, which it is after a moment.
                wait_until(
                    lambda: client.get("/readyz").status_code == 200,
                    timeout=60,
                    what="the API to be ready again",
                )
        finally:
            own.stop()  # and its logs hold no traceback
    refused = {(name, status, retry) for name, status, retry in answers if name != "GET /readyz"}
    assert refused == {(name, 503, "5") for name in ("GET /jobs/{id}", "GET /jobs", "POST /jobs")}
    assert {status for name, status, _ in answers if name == "GET /readyz"} == {503}
    assert recovered_in < 5
    assert job["status"] == "succeeded", (job, own.logs())
    # The same attempt went on: the lease outlived the outage, and no epoch was redone.
    assert job["attempt"] == 1 and job["resumed_from_epoch"] is None, job
    assert [epoch["epoch"] for epoch in job["history"]] == [1, 2, 3, 4, 5]
    steps = [point["step"] for point in loss]  # five epochs' worth, each step once
    assert steps == list(range(1, len(steps) + 1)) and len(steps) % 5 == 0, steps
    for name in ("api", "worker"):
        notices = [line for line in whole_log(own, name).splitlines() if OUTAGE_LINE.search(line)]
        assert 0 < len(notices) <= 6, (name, notices)


# What a worker writes of a job. Each row written to them is noted with the writer's
# application_name (each worker's PGAPPNAME), in the writing transaction: a write that a
# lease's condition refused, or that was rolled back, leaves no note.
WORKER_WRITTEN = (
    "jobs",
    "job_events",
    "metric_points",
    "epoch_metrics",
    "model_versions",
    "model_names",
    "model_aliases",
    "alias_moves",
    "registry_generation",
)
AUDIT = """
CREATE TABLE write_audit (
    id bigserial PRIMARY KEY, writer text NOT NULL, written text NOT NULL, operation text NOT NULL
);
CREATE FUNCTION note_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO write_audit (writer, written, operation)
    VALUES (current_setting('application_name'), TG_TABLE_NAME, TG_OP);
    RETURN NULL;
END $$;
"""


def audit_writes(database_url: str) -> None:
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as connection:
        connection.execute(AUDIT)
        for table in WORKER_WRITTEN:
            connection.execute(
                f"CREATE TRIGGER noted AFTER INSERT OR UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION note_write()"
            )


def psycopg_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://")


def writes_since(database_url: str, mark: int, writer: str) -> list[tuple]:
    with psycopg.connect(psycopg_url(database_url)) as connection:
        return connection.execute(
            "SELECT id, written, operation FROM write_audit WHERE id > %s AND writer = %s",
            (mark, writer),
        ).fetchall()


def last_write(database_url: str) -> int:
    with psycopg.connect(psycopg_url(database_url)) as connection:
        return connection.execute("SELECT coalesce(max(id), 0) FROM write_audit").fetchone()[0]


def checkpoints_named(database_url: str, job_id: str) -> set[str]:
    """The objects the job's row counts: its last and best checkpoints."""
    with psycopg.connect(psycopg_url(database_url)) as connection:
        row = connection.execute(
            "SELECT last_checkpoint, best_checkpoint FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
    return {key for key in row if key}


def stored_checkpoints(stack: Stack, job_id: str) -> set[str]:
    folder = stack.folder / "artifacts" / job_prefix(job_id)
    return {f"{job_prefix(job_id)}{path.name}" for path in folder.glob("*.pt")}


# Steps are written every 2 s, so the frozen worker holds a buffer of them to write when
# it is thawed, at once: its writer's wait ran out while it was frozen.
FROZEN_WORKER = {"TRAINSERVE_TORCH_THREADS": "1", "TRAINSERVE_STEP_FLUSH_SECONDS": "2"}


def test_a_worker_frozen_past_its_lease_writes_nothing_once_thawed(tmp_path, broker, mnist):
    """Two workers; the one training a job is frozen (SIGSTOP) until its lease runs out and
    the other has taken the job (attempt 2), then thawed (SIGCONT) while the other trains.
    From the takeover on, the thawed worker writes nothing (no step, metric, epoch,
    checkpoint row or object, event, status or model version: every write is fenced by
    the lease in its own transaction, and each is noted here by the writer's name), it
    stops with one line saying why, and the job ends on the other with a whole history."""
    with fresh_postgres_database() as database_url:
        audit_writes(database_url)
        own = Stack(tmp_path, database_url, broker.url)
        try:
            for name in WORKERS:
                own.start_worker(name, PGAPPNAME=name, **FROZEN_WORKER)
            own.start_api()
            with own.client(timeout=60) as client:
                upload = mnist_upload(mnist, 1500, 300)
                dataset_id = client.post("/datasets", files=upload).json()["id"]
                job_id = submit(client, mnist_job(dataset_id, epochs=8))["id"]
                running = wait_for(client, job_id, lambda j: j["epoch"] >= 1, timeout=240)
                stale = running["worker"].split("@")[0]
                time.sleep(1)  # into epoch 2, whose first steps wait in the writer's buffer
                own.signal(stale, signal.SIGSTOP)
                try:
                    taken = wait_for(
                        client,
                        job_id,
                        lambda j: j["attempt"] == 2 and j["status"] == "running",
                        timeout=120,
                    )
                    mark = last_write(database_url)
                    objects_at_takeover = stored_checkpoints(own, job_id)
                finally:
                    own.signal(stale, signal.SIGCONT)
                stopped = wait_until(
                    lambda: STALE_STOP.search(whole_log(own, stale)),
                    timeout=60,
                    what=lambda: f"{stale} to stop:\n{own.log(stale)}",
                )
                job = wait_for_job(client, own, job_id)
                versions = client.get("/models", params={"name": job["name"]}).json()["items"]
            stale_writes = writes_since(database_url, mark, stale)
            named = checkpoints_named(database_url, job_id)
            stored = stored_checkpoints(own, job_id)
        finally:
            own.stop()  # and its logs hold no traceback
    assert taken["worker"].split("@")[0] != stale
    assert stale_writes == [], stale_writes
    assert stopped.group("attempt") == "1"
    assert whole_log(own, stale).count("writing nothing more") == 1
    # No object of the stale attempt was uploaded after the takeover, and every object
    # left is one the row counts.
    assert stored <= objects_at_takeover | {key for key in stored if "/a2-" in key}
    assert stored == named, (stored, named)
    assert job["status"] == "succeeded" and job["attempt"] == 2, job
    assert job["worker"].split("@")[0] != stale and job["resumed_from_epoch"] >= 1
    assert [epoch["epoch"] for epoch in job["history"]] == list(range(1, 9))
    assert [version["job_id"] for version in versions] == [job_id]


def on_a_small_disk(folder: Path, size: str) -> tuple[str, ...]:
    """A launcher that runs its command with `folder` on a tmpfs of `size` of its own (in
    a mount namespace of its own, as an unprivileged user may make): a real disk that
    fills, seen by that process alone."""
    mount = f'mount -t tmpfs -o size={size} tmpfs "{folder}" && exec "$@"'
    return ("unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount, "sh")


def files_seen_by(process_id: int, folder: Path) -> list[str]:
    """The files under `folder` as the process sees it (through its mount namespace)."""
    inside = Path(f"/proc/{process_id}/root") / folder.relative_to("/")
    return sorted(str(path.relative_to(inside)) for path in inside.rglob("*") if path.is_file())


def stored_datasets_match(database_url: str, bucket: BucketPrefix) -> bool:
    """Every dataset row's object is in the bucket, whole: its bytes hash to its sha256."""
    with psycopg.connect(psycopg_url(database_url)) as connection:
        rows = connection.execute("SELECT path, file_sha256 FROM datasets").fetchall()
    return bool(rows) and all(
        hashlib.sha256(bucket.read(path)).hexdigest() == sha256 for path, sha256 in rows
    )


def test_a_worker_whose_cache_disk_is_full_fails_the_job_saying_so(tmp_path, broker, mnist):
    """A worker whose read cache is on a 256 KiB disk (a real tmpfs) cannot download a
    dataset of about 800 KB from the bucket: each attempt fails with ENOSPC, and the job
    ends failed with an error naming the cache's folder and what to do, no traceback in
    the logs, nothing half-written in the cache, the dataset whole in the store; a worker
    with room then trains a job on the same dataset."""
    small, roomy = tmp_path / "small-cache", tmp_path / "roomy-cache"
    small.mkdir()
    with moto_server(tmp_path) as s3, fresh_postgres_database() as database_url:
        bucket = BucketPrefix(s3, "faults")
        own = Stack(tmp_path, database_url, broker.url, bucket=bucket)
        own.env |= {"TRAINSERVE_TORCH_THREADS": "1"}
        try:
            own.start_worker(
                "worker-small",
                launcher=on_a_small_disk(small, "256k"),
                TRAINSERVE_CACHE_DIR=str(small),
            )
            own.start_api(TRAINSERVE_CACHE_DIR=str(tmp_path / "api-cache"))
            with own.client(timeout=60) as client:
                upload = mnist_upload(mnist, 1000, 200)
                dataset_id = client.post("/datasets", files=upload).json()["id"]
                spec = mnist_job(dataset_id, epochs=1, limits={"max_attempts": 2})
                failed = wait_for_job(client, own, submit(client, spec)["id"])
                left = files_seen_by(own.processes["worker-small"].pid, small)
                own.terminate("worker-small")
                own.start_worker("worker-roomy", TRAINSERVE_CACHE_DIR=str(roomy))
                later = wait_for_job(client, own, submit(client, spec | {"seed": 1})["id"])
            whole = stored_datasets_match(database_url, bucket)
        finally:
            own.stop()  # and its logs hold no traceback
    assert failed["status"] == "failed" and failed["end_reason"] == "attempts_exhausted", failed
    assert failed["attempt"] == 2 and f"the read cache's disk is full ({small})" in failed["error"]
    assert "TRAINSERVE_CACHE_BYTES" in failed["error"] and "attempt 2 of 2" in failed["error"]
    assert left == [], left  # no half-written entry, no temporary file
    assert whole
    assert later["status"] == "succeeded", later
    assert "worker-roomy" in later["worker"]
