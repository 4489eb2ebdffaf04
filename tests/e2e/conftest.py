"""A real stack for end-to-end tests: PostgreSQL, Redis, an API process, a Celery worker
process, and the artefact store in a bucket of moto's S3 server or in a local folder.

Each test session gets its own PostgreSQL database and Redis database number, so a
developer's running service is left alone. Override the servers with
TRAINSERVE_E2E_POSTGRES (an admin URL) and TRAINSERVE_E2E_REDIS.
"""

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from sqlalchemy import Engine, Row, create_engine, text

from app.store.tables import ENDED
from models.data import NamedFile, read_idx_array
from tests.conftest import ADMIN_KEY, PROJECT, bearer, idx_bytes, migrate
from tests.utils.s3 import BucketPrefix, moto_server
from tests.utils.servers import GRANIAN, UVICORN, start_api
from tests.utils.waiting import wait_until

POSTGRES_ADMIN = os.environ.get(
    "TRAINSERVE_E2E_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TRAINSERVE_E2E_REDIS", "redis://127.0.0.1:6379/11")
JOB_TIMEOUT_S = 300
E2E_MAX_UPLOAD_BYTES = 32 << 20
E2E_MAX_DECODED_BYTES = 256 << 20
# A registry poll interval no test outlasts: an API process started with it learns of a
# new version or an alias move only through the registry's notifications.
NEVER_POLLED = {"TRAINSERVE_REGISTRY_POLL_SECONDS": "3600"}
# What a healthy process never writes: a traceback (a bug, or an error logged with its
# stack), or logging's own report of a log call whose arguments do not fit its format. Both
# leave every answer correct, so only the logs show them.
LOG_FAULTS = ("Traceback (most recent call last)", "--- Logging error ---")


@contextmanager
def fresh_postgres_database():
    """A new, migrated PostgreSQL database, dropped afterwards; yields its SQLAlchemy URL."""
    name = f"trainserve_e2e_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"end-to-end tests need PostgreSQL at {POSTGRES_ADMIN}: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    try:
        migrate(url)
        yield url
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def redis_url():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"end-to-end tests need Redis at {REDIS_URL}: {exc}")
    yield REDIS_URL
    client.flushdb()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """moto's S3 server, over HTTP, for every stack of the session that keeps its artefacts
    in a bucket: each under a prefix of its own."""
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


class Stack:
    """The API and a worker as separate processes, configured like production; their
    artefacts in `bucket` (a prefix of the S3 server's bucket), else in the stack's folder."""

    def __init__(
        self,
        folder: Path,
        database_url: str,
        broker_url: str,
        server: str = GRANIAN,
        bucket: BucketPrefix | None = None,
    ):
        self.folder, self.server, self.bucket = folder, server, bucket
        self.urls: dict[str, str] = {}  # of each API process, by name
        self.env = os.environ | {
            "TRAINSERVE_DATABASE_URL": database_url,
            "TRAINSERVE_BROKER_URL": broker_url,
            "TRAINSERVE_ARTIFACTS_DIR": str(self.artifacts),  # the store without a bucket
            "TRAINSERVE_CACHE_DIR": str(folder / "cache"),  # what was read from a bucket
            "TRAINSERVE_BROKER_DIR": str(folder / "broker"),  # for filesystem:// only
            # Failures are detected in seconds here, so tests of them run in seconds.
            "TRAINSERVE_LEASE_SECONDS": "3",
            "TRAINSERVE_HEARTBEAT_SECONDS": "0.3",
            "TRAINSERVE_SWEEP_SECONDS": "0.5",
            "TRAINSERVE_STEP_FLUSH_SECONDS": "0.2",
            "TRAINSERVE_EVENTS_POLL_SECONDS": "0.1",
            "TRAINSERVE_ADMIN_KEY": ADMIN_KEY,
            # Limits a small box would set; the hostile inputs are sized to pass them.
            "TRAINSERVE_MAX_UPLOAD_BYTES": str(E2E_MAX_UPLOAD_BYTES),
            "TRAINSERVE_MAX_DECODED_BYTES": str(E2E_MAX_DECODED_BYTES),
        }
        if bucket is not None:
            self.env |= bucket.env()
        self.processes: dict[str, subprocess.Popen] = {}
        self.checked: dict[Path, int] = {}  # how far each log has been checked for faults
        # Why this stack's logs may hold faults (a test that breaks its processes on
        # purpose); None: stop() fails on any.
        self.faults_expected: str | None = None

    def start(self, name: str, *command: str, env: dict[str, str] | None = None) -> None:
        """Start a process (`env` added to the stack's environment) with a log of its own."""
        self.processes[name] = subprocess.Popen(
            command,
            cwd=PROJECT,
            env=self.env | (env or {}),
            stdout=self._log_file(name),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a kill reaches its children
        )

    def _log_file(self, name: str):
        """Appended to: a restarted process's log follows the one before."""
        return open(self.folder / f"{name}.log", "ab")

    def terminate(self, name: str, timeout: float = 30) -> float:
        """SIGTERM, as `docker stop` sends it; returns how long the process took to exit."""
        process = self.processes.pop(name)
        started = time.monotonic()
        process.terminate()
        process.wait(timeout=timeout)
        return time.monotonic() - started

    def kill(self, name: str) -> None:
        """kill -9 the process and its children, as a lost machine would."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def signal(self, name: str, signum: int) -> None:
        """`signum` to the process and its children: SIGSTOP freezes them, as a machine
        that stalls (a long GC pause, a VM paused), SIGCONT thaws them."""
        os.killpg(self.processes[name].pid, signum)

    def start_worker(
        self, name: str = "worker", *queues: str, launcher: tuple[str, ...] = (), **env: str
    ) -> None:
        """A Celery worker; another name: another worker, as on another machine when `env`
        gives it local folders of its own; `queues`: the queues it serves (-Q); `launcher`:
        the command that runs it (given the worker's command as its arguments)."""
        self.start(
            name,
            *launcher,
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.celery_app",
            "worker",
            "--loglevel=INFO",
            "--concurrency=1",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname={name}@%h",
            *([f"--queues={','.join(queues)}"] if queues else []),
            env=env,
        )

    def start_api(self, name: str = "api", port: int = 0, **env: str) -> str:
        """Start an API process (another name: another process on its own port; `port`: on
        that one, a killed process's), `env` added to the stack's environment; its URL."""
        process, url = start_api(
            self.env | env, self._log_file(name), self.server, lambda: self.log(name), port
        )
        self.processes[name], self.urls[name] = process, url
        return url

    def client(self, token: str = ADMIN_KEY, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=bearer(token), timeout=timeout)

    @property
    def url(self) -> str:
        return self.urls["api"]

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-5000:]

    def logs(self) -> str:
        names = sorted(log.stem for log in self.folder.glob("*.log"))
        return "\n".join(f"--- {name}\n{self.log(name)}" for name in names)

    def new_faults(self) -> list[str]:
        """The lines of LOG_FAULTS written to any of this stack's logs since the last call,
        each with what follows it: the error that was raised."""
        faults = []
        for log in sorted(self.folder.glob("*.log")):
            with open(log, "rb") as file:
                file.seek(self.checked.get(log, 0))
                lines = file.read().decode(errors="replace").splitlines()
                self.checked[log] = file.tell()
            faults += [
                f"{log.name}: " + " | ".join(lines[i : i + 12])
                for i, line in enumerate(lines)
                if any(fault in line for fault in LOG_FAULTS)
            ]
        return faults

    def assert_clean_logs(self) -> None:
        faults = self.new_faults()
        assert not faults, "the stack's logs hold tracebacks or logging errors:\n" + "\n".join(
            faults
        )

    @property
    def artifacts(self) -> Path:
        """The local artefact folder: the store of a stack without a bucket."""
        return self.folder / "artifacts"

    def stored(self, start: str = "") -> list[str]:
        """The keys of the store's objects (`datasets/…`, `jobs/…`) that start with `start`:
        the bucket's, or the local folder's."""
        if self.bucket is not None:
            return self.bucket.keys(start)
        return [key for key in files_under(self.artifacts) if key.startswith(start)]

    def holds(self, key: str) -> bool:
        return key in self.stored(key)

    @cached_property
    def database(self) -> Engine:
        return create_engine(self.env["TRAINSERVE_DATABASE_URL"])

    def dataset_row(self, dataset_id: str) -> Row:
        """The dataset's row as the database holds it (the API shows neither its key nor
        its deletion)."""
        with self.database.connect() as connection:
            query = text("SELECT path, deleted_at FROM datasets WHERE id = :id")
            return connection.execute(query, {"id": dataset_id}).one()

    def assert_stored(self, api: httpx.Client, job: dict) -> None:
        """A succeeded job's dataset and the checkpoint its version serves are objects of
        the stack's store."""
        checkpoint = api.get(f"/models/{job['model_id']}").json()["checkpoint_path"]
        dataset = self.dataset_row(job["dataset_id"]).path
        missing = [key for key in (dataset, checkpoint) if not self.holds(key)]
        store = self.env.get("TRAINSERVE_ARTIFACTS", self.artifacts)
        assert not missing, f"job {job['id']}: {missing} not in the store {store}"

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.faults_expected is None:
            self.assert_clean_logs()  # shutdown included
        if "database" in self.__dict__:  # made
            self.database.dispose()


def files_under(folder: Path) -> list[str]:
    """Every file under `folder` (none if it does not exist), by its path relative to it."""
    return sorted(
        path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()
    )


@dataclass(frozen=True)
class StackKind:
    """Which server the session's stack runs the API on, and where it keeps artefacts."""

    server: str
    on_s3: bool


# Every test on Granian (as `make run` serves the API) with the store on S3 (as a cluster
# keeps it: docs/storage.md); the tests marked `predicts` a second time on uvicorn (the
# other server docs/operations.md offers) with the store in the local folder (the
# embedded default). So each server and each store runs the tests of /predict, and the
# run is not doubled.
SESSION_STACKS = [
    pytest.param(StackKind(GRANIAN, on_s3=True), id="granian-s3"),
    pytest.param(StackKind(UVICORN, on_s3=False), id="uvicorn-local"),
]


def pytest_collection_modifyitems(config, items):
    """The stack on uvicorn runs only the tests marked `predicts`."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("stack") if callspec is not None else None
        on_uvicorn = kind is not None and kind.server == UVICORN
        (dropped if on_uvicorn and not item.get_closest_marker("predicts") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


# The session stack's part of the bucket.
SESSION_PREFIX = "session"


@pytest.fixture(scope="session", params=SESSION_STACKS)
def stack(request, tmp_path_factory, redis_url):
    """The session's stack of each kind, each on a database and broker of its own."""
    kind: StackKind = request.param
    bucket = BucketPrefix(request.getfixturevalue("s3"), SESSION_PREFIX) if kind.on_s3 else None
    redis.Redis.from_url(redis_url).flushdb()
    with fresh_postgres_database() as postgres_url:
        folder = tmp_path_factory.mktemp("stack")
        stack = Stack(folder, postgres_url, redis_url, kind.server, bucket)
        stack.start_worker()
        stack.start_api()
        yield stack
        stack.stop()


@pytest.fixture(autouse=True)
def logs_stay_clean(request):
    """A test that used the session's stack fails if the stack's logs gained a traceback or
    a logging error meanwhile, unless it is marked `log_faults_expected(why)`: a test that
    breaks processes on purpose."""
    yield
    if "stack" not in request.fixturenames:
        return
    stack = request.getfixturevalue("stack")
    if request.node.get_closest_marker("log_faults_expected"):
        stack.new_faults()  # passed over: the next test is checked from here
    else:
        stack.assert_clean_logs()


@pytest.fixture(autouse=True)
def artefacts_stay_in_the_bucket(request):
    """After a test that used a session stack on S3: no artefact was written to its local
    folder instead (each job's own objects are checked by `wait_for_job`)."""
    yield
    if "stack" not in request.fixturenames:
        return
    stack = request.getfixturevalue("stack")
    if stack.bucket is not None:
        assert not files_under(stack.artifacts), f"written beside the bucket: {stack.artifacts}"


@pytest.fixture(scope="session")
def api(stack):
    with stack.client() as client:
        yield client


def wait_for_job(api: httpx.Client, stack: Stack, job_id: str) -> dict:
    """The job once it has ended; if it succeeded, its dataset and checkpoint are checked
    to be in the stack's store."""
    job = wait_until(
        lambda: ended(api.get(f"/jobs/{job_id}"), stack),
        timeout=JOB_TIMEOUT_S,
        what=lambda: f"job {job_id} to end; worker log:\n{stack.log('worker')}",
        interval=0.2,
    )
    if job["status"] == "succeeded":
        stack.assert_stored(api, job)
    return job


def ended(answer: httpx.Response, stack: Stack) -> dict | None:
    assert answer.status_code == 200, f"{answer.status_code} {answer.text}\n{stack.logs()}"
    job = answer.json()
    return job if job["status"] in ENDED else None


@pytest.fixture(scope="session")
def mnist(shared_data):
    folder = shared_data / "mnist"
    return {
        name: read_idx_array(
            NamedFile(name, io.BytesIO((folder / f"{name}-ubyte.gz").read_bytes()))
        )
        for name in (
            "train-images-idx3",
            "train-labels-idx1",
            "t10k-images-idx3",
            "t10k-labels-idx1",
        )
    }


def mnist_upload(mnist: dict, train: int, test: int = 0) -> list[tuple]:
    """Multipart `file` parts: the first `train` and `test` MNIST examples as IDX files."""
    counts = {"train-images-idx3": train, "train-labels-idx1": train}
    if test:
        counts |= {"t10k-images-idx3": test, "t10k-labels-idx1": test}
    return [
        ("file", (f"{name}-ubyte.gz", idx_bytes(mnist[name][:count])))
        for name, count in counts.items()
    ]


@pytest.fixture(scope="module")
def mnist_dataset(api, mnist) -> str:
    """3,000 training digits and 500 test ones, on the session's stack."""
    response = api.post("/datasets", files=mnist_upload(mnist, 3000, 500))
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


# A text job that trains in seconds on the sentiment_csv fixture.
SENTIMENT_JOB = {
    "task": "text_sentiment",
    "model": {"arch": "bag_of_embeddings"},
    "text": {"min_freq": 1},
    "hyperparameters": {"epochs": 3, "batch_size": 8, "optimizer": "adam", "lr": 0.05},
}
