"""Job API figures: GET /jobs/{id} and GET /jobs?limit=20 beside FastAPI answering from memory.

    .venv/bin/python bench/job_api.py [--seconds 10] [--databases postgresql,sqlite]
                                      [--jobs 40] [--port 18300]

For each database it starts its own trainserve API as users run it:

- postgresql: a database of its own on TRAINSERVE_BENCH_POSTGRES (default the local
  server), Granian as the image's command runs it, with docker-compose.yml's process
  count and access log (GRANIAN_WORKERS=2, GRANIAN_LOG_ACCESS_ENABLED=false);
- sqlite: `make run`'s API: a SQLite file, one process, the access log on.

It stores `--jobs` jobs as a user and a worker would: two datasets, a key and the jobs
through the API, then each job's life through the store's own functions (claimed, steps
and epochs recorded, then succeeded, failed, cancelled, still running or still queued).
Then wrk (Debian's `wrk`, a C load generator, one thread) drives both routes at c=1 and
c=32 with that key, after a warm-up; `/jobs/{id}` cycles through every job. Beside it,
under the same Granian process count and log setting, bench/job_api_floor.py answers
the service's own JSON from memory: the floor. Figures: requests/s, p50, p99, errors,
the ratio to the floor, and CPU milliseconds per request (the server's processes, and on
PostgreSQL the backends serving its database, from /proc): on a shared machine the
throughput follows the others' load, the CPU a request costs much less. Read the ratios
beside the load average printed with them. It prints; it asserts nothing.
"""

import argparse
import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from PIL import Image
from sqlalchemy import make_url
from sqlalchemy.orm import Session, sessionmaker
from wrk import paths_script, require_wrk, run_wrk

from app.store import lifecycle, records
from app.store.db import make_engine
from app.store.tables import EndReason, ModelVersion

PROJECT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
ADMIN_KEY = "ts_bench-admin-key-0123456789abcdef0123456789abcd"
POSTGRES_ADMIN = os.environ.get(
    "TRAINSERVE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PAGE = "/jobs?limit=20"
CONCURRENCY = (1, 32)
WARMUP_S = 3
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STEPS_PER_EPOCH = 40
# The image's command (Dockerfile CMD and ENV); docker-compose.yml sets the two variables.
SERVICE_COMMAND = ["granian", "--interface", "asgi", "app.main:app"]
DOCKER_COMPOSE_ENV = {"GRANIAN_WORKERS": "2", "GRANIAN_LOG_ACCESS_ENABLED": "false"}
MAKE_RUN_ENV = {"GRANIAN_LOG_ACCESS_ENABLED": "true"}  # its --access-log
# What the simulated jobs run: (task, arch); each job picks one in turn.
RECIPES = (
    ("image_classification", "tutorial_cnn"),
    ("text_sentiment", "bag_of_embeddings"),
    ("image_classification", "resnet18"),
    ("text_sentiment", "text_cnn"),
    ("image_classification", "fast_resnet"),
    ("text_sentiment", "text_gru"),
)
# How each job ends, in turn: mostly succeeded, as on a service in use.
OUTCOMES = ("succeeded",) * 6 + ("failed", "succeeded", "cancelled", "running")


@dataclass
class Figures:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float  # per request: the server's processes and the database's backends


@dataclass
class Server:
    base: str
    pid: int
    database: str | None = None  # the PostgreSQL database whose backends count as its CPU


# ---- a database and a service of the bench's own ------------------------------------------


@contextmanager
def database(kind: str, folder: Path):
    """A fresh, empty database's SQLAlchemy URL, dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder}/trainserve.db"
        return
    name = f"jobapi_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        base = POSTGRES_ADMIN.rsplit("/", 1)[0].split("://", 1)[1]
        yield f"postgresql+psycopg://{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def service_env(kind: str, url: str, folder: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TRAINSERVE_", "GRANIAN_"))
    }
    env |= {
        "PYTHONPATH": str(PROJECT),
        "TRAINSERVE_DATABASE_URL": url,
        "TRAINSERVE_BROKER_URL": "filesystem://",
        "TRAINSERVE_BROKER_DIR": str(folder / "broker"),
        "TRAINSERVE_ARTIFACTS_DIR": str(folder / "artifacts"),
        "TRAINSERVE_ADMIN_KEY": ADMIN_KEY,
    }
    return env | (DOCKER_COMPOSE_ENV if kind == "postgresql" else MAKE_RUN_ENV)


@contextmanager
def server(app_args: list[str], env: dict[str, str], port: int, log_path: Path):
    """Granian serving these arguments until the block ends; yields its Server."""
    command = [sys.executable, "-m", *app_args, "--host", HOST, "--port", str(port)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://{HOST}:{port}"
    try:
        _wait_until_up(base, process, log_path)
        yield Server(base, process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(base: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/docs", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit(f"server did not start in 120 s:\n{log_path.read_text()[-3000:]}")


def migrate(env: dict[str, str]) -> None:
    alembic = Path(sys.executable).with_name("alembic")
    subprocess.run([str(alembic), "upgrade", "head"], cwd=PROJECT, env=env, check=True)


# ---- stored jobs: through the API, then each job's life through the store -----------------


def store_jobs(base: str, url: str, count: int) -> tuple[str, list[str]]:
    """A key that no limit stops and `count` jobs with their history; (token, job ids)."""
    admin = httpx.Client(base_url=base, headers=_bearer(ADMIN_KEY), timeout=60)
    # Limits far above the load, so that each request still pays for their check.
    limits = {"rate_limit_per_second": 1e5, "max_concurrent_jobs": 1000}
    token = _checked(admin.post("/keys", json={"scope": "train", **limits}))["key"]
    client = httpx.Client(base_url=base, headers=_bearer(token), timeout=60)
    datasets = {
        "image_classification": _upload(client, "shapes.zip", _image_zip()),
        "text_sentiment": _upload(client, "reviews.csv", _review_csv()),
    }
    rng = random.Random(0)
    job_ids = []
    sessions = sessionmaker(make_engine(url), expire_on_commit=False)
    for number in range(count):
        task, arch = RECIPES[number % len(RECIPES)]
        spec = {
            "task": task,
            "dataset_id": datasets[task],
            "name": f"{arch.replace('_', '-')}-{number % 3}",
            "model": {"arch": arch},
            "hyperparameters": {"epochs": rng.randint(3, 30), "lr": rng.choice((0.01, 0.05))},
        }
        job = _checked(client.post("/jobs", json=spec))
        job_ids.append(job["id"])
        outcome = "queued" if number >= count - 2 else OUTCOMES[number % len(OUTCOMES)]
        with sessions() as session:
            play_worker(session, job, outcome, rng)
    return token, job_ids


def play_worker(session: Session, job: dict, outcome: str, rng: random.Random) -> None:
    """What a worker writes for this job, through the store, ending it as `outcome`."""
    if outcome == "queued":
        return
    job_id, owner = job["id"], f"celery@bench-{rng.randint(1, 3)}"
    lifecycle.claim_job(session, job_id, owner, lease_seconds=3600)
    lifecycle.set_device(session, job_id, owner, "cpu")
    epochs = job["epochs"] if outcome == "succeeded" else rng.randint(1, job["epochs"])
    best = None
    for epoch in range(1, epochs + 1):
        metrics, step = _train_epoch(session, job_id, owner, epoch, epochs, rng)
        is_best = best is None or metrics["val_accuracy"] > best["val_accuracy"]
        best = metrics if is_best else best
        records.record_epoch(session, job_id, owner, metrics, step, is_best, checkpoints={})
    _end(session, job, owner, outcome, best)


def _train_epoch(
    session: Session, job_id: str, owner: str, epoch: int, epochs: int, rng: random.Random
):
    progress = epoch / epochs
    first = (epoch - 1) * STEPS_PER_EPOCH + 1
    steps = [
        (step, epoch, 2.3 * (1 - 0.7 * progress) + rng.uniform(0, 0.2), 0.01 * (1 - progress))
        for step in range(first, first + STEPS_PER_EPOCH)
    ]
    records.record_steps(session, job_id, owner, steps)
    accuracy = min(0.99, 0.4 + 0.55 * progress + rng.uniform(-0.03, 0.03))
    metrics = {
        "epoch": epoch,
        "train_loss": steps[-1][2],
        "train_accuracy": min(0.99, accuracy + 0.02),
        "val_loss": steps[-1][2] * 1.1,
        "val_accuracy": accuracy,
        "seconds": rng.uniform(4, 9),
        "samples_per_second": rng.uniform(900, 1400),
    }
    return metrics, steps[-1][0]


def _end(session: Session, job: dict, owner: str, outcome: str, best: dict) -> None:
    job_id = job["id"]
    if outcome == "succeeded":
        spec = job["spec"]
        model = ModelVersion(
            job_id=job_id,
            name=spec["name"],
            task=spec["task"],
            arch=spec["model"]["arch"],
            classes=["negative", "positive"],
            metrics=best,
            # Not loaded: the bench asks no predictions (the API logs one failed load).
            checkpoint_path=f"bench/{job_id}/best.pt",
            sha256="0" * 64,
        )
        lifecycle.finish_job(session, job_id, owner, model, EndReason.COMPLETED)
    elif outcome == "failed":
        error = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
        lifecycle.fail_job(session, job_id, owner, error, EndReason.INVALID)
    elif outcome == "cancelled":
        lifecycle.request_cancel(session, job_id)
        lifecycle.confirm_cancelled(session, job_id, owner)


def _upload(client: httpx.Client, filename: str, data: bytes) -> str:
    return _checked(client.post("/datasets", files={"file": (filename, data)}))["id"]


def _image_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, shade in (("dark", 40), ("light", 210)):
            for number in range(20):
                image = io.BytesIO()
                Image.new("RGB", (16, 16), (shade, number * 5, 128)).save(image, "PNG")
                archive.writestr(f"{label}/{number}.png", image.getvalue())
    return buffer.getvalue()


def _review_csv() -> bytes:
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(("text", "label"))
    for number in range(40):
        writer.writerow((f"a wonderful film, part {number}", "positive"))
        writer.writerow((f"a dull film, part {number}", "negative"))
    return rows.getvalue().encode()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _checked(response: httpx.Response) -> dict:
    if response.is_error:
        sys.exit(f"{response.request.method} {response.request.url}: {response.text}")
    return response.json()


# ---- load: wrk ------------------------------------------------------------------------------


def floor_answers(base: str, token: str, job_ids: list[str]) -> dict:
    """The service's own answers, for the floor to send."""
    client = httpx.Client(base_url=base, headers=_bearer(token), timeout=60)
    jobs = {job_id: _checked(client.get(f"/jobs/{job_id}")) for job_id in job_ids}
    return {"jobs": jobs, "page": _checked(client.get(PAGE))}


def drive(target: Server, token: str | None, job_ids: list[str], seconds: int, folder: Path):
    """{(route, concurrency): Figures} for both routes."""
    job_paths = [f"/jobs/{job_id}" for job_id in job_ids]
    routes = {"/jobs/{id}": paths_script(folder, f"{target.base}/jobs", job_paths)}
    routes[PAGE] = [f"{target.base}{PAGE}"]
    headers = ["-H", f"Authorization: Bearer {token}"] if token else []
    for arguments in routes.values():
        wrk(target, headers + arguments, 32, WARMUP_S)
    return {
        (route, concurrency): wrk(target, headers + arguments, concurrency, seconds)
        for route, arguments in routes.items()
        for concurrency in CONCURRENCY
    }


def wrk(target: Server, arguments: list[str], connections: int, seconds: int) -> Figures:
    before = cpu_times(target)
    figures = run_wrk(arguments, connections, seconds)
    cpu_seconds = _cpu_used(before, cpu_times(target))
    return Figures(
        requests_per_s=figures.requests_per_s,
        p50_ms=figures.p50_ms,
        p99_ms=figures.p99_ms,
        errors=figures.errors,
        cpu_ms=1000 * cpu_seconds / max(figures.requests, 1),
    )


def cpu_times(target: Server) -> dict[int, float]:
    """CPU seconds used so far by each of the server's processes and, on PostgreSQL, each
    backend connected to its database: what a request costs whoever else loads the machine."""
    parents, used, backends = {}, {}, set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        used[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        if target.database and f" {target.database} ".encode() in command:
            backends.add(pid)
    return {pid: used[pid] for pid in used if pid in backends or _under(pid, target.pid, parents)}


def _under(pid: int, ancestor: int, parents: dict[int, int]) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = parents.get(pid, 0)
    return False


def _cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


# ---- one database, then the table --------------------------------------------------------


def bench(kind: str, args, folder: Path) -> dict:
    with database(kind, folder) as url:
        env = service_env(kind, url, folder)
        migrate(env)
        log = folder / f"{kind}-service.log"
        with server(SERVICE_COMMAND, env, args.port, log) as service_server:
            service_server.database = make_url(url).database if kind == "postgresql" else None
            started = time.monotonic()
            token, job_ids = store_jobs(service_server.base, url, args.jobs)
            print(f"{kind}: {len(job_ids)} jobs stored in {time.monotonic() - started:.0f} s")
            answers = floor_answers(service_server.base, token, job_ids)
            service = drive(service_server, token, job_ids, args.seconds, folder)
    answers_path = folder / "answers.json"
    answers_path.write_text(json.dumps(answers))
    floor_env = env | {"JOB_API_FLOOR_DATA": str(answers_path)}
    bench_dir = ["--working-dir", str(PROJECT / "bench")]
    floor_app = [*SERVICE_COMMAND[:-1], *bench_dir, "job_api_floor:app"]
    with server(floor_app, floor_env, args.port + 1, folder / f"{kind}-floor.log") as floor_server:
        floor = drive(floor_server, None, job_ids, args.seconds, folder)
    sizes = (
        len(json.dumps(next(iter(answers["jobs"].values())))),
        len(json.dumps(answers["page"])),
    )
    return {"service": service, "floor": floor, "sizes": sizes}


def print_table(kind: str, results: dict) -> None:
    processes = DOCKER_COMPOSE_ENV["GRANIAN_WORKERS"] if kind == "postgresql" else "1"
    job_bytes, page_bytes = results["sizes"]
    print(
        f"\n{kind}: {processes} Granian process(es); a job's JSON {job_bytes} bytes, "
        f"a page's {page_bytes} bytes; load average {_load()}"
    )
    print(
        f"{'route':16} {'c':>3} {'server':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'of floor':>8} {'cpu ms':>7}"
    )
    for (route, concurrency), figures in results["service"].items():
        floor = results["floor"][(route, concurrency)]
        for name, row in (("trainserve", figures), ("floor", floor)):
            ratio = row.requests_per_s / floor.requests_per_s
            print(
                f"{route:16} {concurrency:>3} {name[:8]:8} {row.requests_per_s:>8.0f} "
                f"{row.p50_ms:>8.2f} {row.p99_ms:>8.2f} {row.errors:>6} {ratio:>8.2f} "
                f"{row.cpu_ms:>7.3f}"
            )


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run")
    parser.add_argument("--databases", default="postgresql,sqlite")
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--port", type=int, default=18300, help="the floor takes the next one")
    args = parser.parse_args()
    require_wrk()
    print(f"load average at start: {_load()} on {os.cpu_count()} cores")
    for kind in args.databases.split(","):
        with tempfile.TemporaryDirectory(prefix="job-api-bench-") as folder:
            print_table(kind, bench(kind, args, Path(folder)))


if __name__ == "__main__":
    main()
