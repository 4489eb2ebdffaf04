"""Dashboard figures, measured in the browser (Debian's chromium, via playwright-python).

    .venv/bin/python bench/ui.py [--database sqlite|postgresql] [--jobs 1000]
                                 [--steps 100000] [--loads 5]

It starts its own trainserve API as `make run` does (one Granian process, the access log
on) on a fresh database: SQLite in a temporary folder, or a database of its own on
TRAINSERVE_BENCH_POSTGRES (default the local server). It stores `--jobs` jobs (each with
a few epochs and 50 steps of loss, a tenth of them still running) and one running job of
`--steps` steps, straight through SQLAlchemy, then signs in and times, each over
`--loads` page loads in one tab:

- the runs page: from navigation start until its table shows the first page of jobs
  (the page's `runs:data` mark);
- the run page of the long job: until its four charts are drawn (`run:curves`), the
  server bucketing its loss and learning rate to 1,500 points each;
- a new step: from its commit (as the worker's step flush writes it) until the run
  page's loss chart has one point more;
- page weight: the bytes of the responses a load of each page fetched (the bodies as
  sent): the pages' own files, and apart from them the API's answers.

It prints; it asserts nothing.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
from alembic import command
from alembic.config import Config
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import insert
from sqlalchemy.orm import sessionmaker

from app.store.db import make_engine
from app.store.records import record_steps
from app.store.tables import Dataset, EpochMetrics, Job, MetricPoint, new_id, utcnow

PROJECT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ADMIN_KEY = "ts_bench-admin-key-0123456789abcdef0123456789abcd"
POSTGRES_ADMIN = os.environ.get(
    "TRAINSERVE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PORT = 18400
EPOCHS = 3
STEPS_PER_SHORT_JOB = 50
# The worker that holds the running jobs' leases: the steps written are fenced by it.
BENCH_WORKER = "bench-worker"
STATUSES = ("succeeded", "succeeded", "failed", "cancelled", "running", "queued") + (
    "succeeded",
) * 4
SPEC = {
    "task": "image_classification",
    "model": {"arch": "tutorial_cnn"},
    "hyperparameters": {"epochs": EPOCHS},
}
ROWS_PER_INSERT = 20_000


@contextmanager
def database(kind: str, folder: Path):
    """A fresh, migrated database; yields its SQLAlchemy URL."""
    if kind == "sqlite":
        url = f"sqlite:///{folder}/trainserve.db"
        migrate(url)
        yield url
        return
    name = f"trainserve_ui_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        migrate(f"{base}/{name}")
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def migrate(url: str) -> None:
    config = Config(str(PROJECT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT / "migrations"))
    config.attributes["database_url"] = url
    command.upgrade(config, "head")


def store_jobs(url: str, jobs: int, steps: int) -> str:
    """`jobs` short jobs and one long running job of `steps` steps; the long job's id."""
    engine = make_engine(url)
    dataset_id, long_job = new_id(), new_id()
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(insert(Dataset), [dataset_row(dataset_id)])
        rows = [job_row(i, dataset_id, now - timedelta(minutes=jobs - i)) for i in range(jobs)]
        connection.execute(insert(Job), rows)
        ended = [row["id"] for row in rows if row["status"] != "queued"]
        connection.execute(insert(EpochMetrics), [epoch_row(j, e) for j in ended for e in (1, 2)])
        short_steps = range(1, STEPS_PER_SHORT_JOB + 1)
        points = [point(j, "loss", s) for j in ended for s in short_steps]
        insert_in_chunks(connection, points)
        long_row = job_row(0, dataset_id, now, status="running") | {"id": long_job}
        connection.execute(insert(Job), [long_row | {"epochs": 100, "event_seq": 0}])
        insert_in_chunks(
            connection, [point(long_job, name, s) for name in ("loss", "lr") for s in range(steps)]
        )
    engine.dispose()
    return long_job


def insert_in_chunks(connection, rows: list[dict]) -> None:
    for start in range(0, len(rows), ROWS_PER_INSERT):
        connection.execute(insert(MetricPoint), rows[start : start + ROWS_PER_INSERT])


def dataset_row(dataset_id: str) -> dict:
    return {
        "id": dataset_id,
        "name": "bench",
        "task": "image_classification",
        "format": "zip",
        "sha256": "0" * 64,
        "fingerprint": "0" * 64,
        "size_bytes": 1,
        "classes": ["a", "b"],
        "counts": {"train": {"a": 10, "b": 10}},
        "details": {},
        "path": "/nonexistent",
    }


def job_row(index: int, dataset_id: str, created, status: str | None = None) -> dict:
    status = status or STATUSES[index % len(STATUSES)]
    started = None if status == "queued" else created + timedelta(seconds=5)
    finished = started + timedelta(seconds=90) if status not in ("queued", "running") else None
    return {
        "id": new_id(),
        "task": "image_classification",
        "dataset_id": dataset_id,
        "name": f"bench-{index % 7}",
        "arch": SPEC["model"]["arch"],
        "spec": SPEC | {"name": f"bench-{index % 7}"},
        "spec_sources": {},
        "status": status,
        "epochs": EPOCHS,
        "epoch": 0 if status == "queued" else 2,
        "best_epoch": None if status == "queued" else 2,
        "best_val_accuracy": None if status == "queued" else 0.9,
        # A running job's lease holds: the sweeper leaves it running.
        "lease_owner": BENCH_WORKER if status == "running" else None,
        "lease_expires_at": created + timedelta(days=1) if status == "running" else None,
        "created_at": created,
        "queued_at": created,
        "started_at": started,
        "finished_at": finished,
    }


def epoch_row(job_id: str, epoch: int) -> dict:
    return {
        "job_id": job_id,
        "epoch": epoch,
        "train_loss": 1 / epoch,
        "train_accuracy": 0.8,
        "val_loss": 1.1 / epoch,
        "val_accuracy": 0.85 + epoch / 100,
        "seconds": 30.0,
        "samples_per_second": 1000.0,
    }


def point(job_id: str, name: str, step: int) -> dict:
    value = 2.0 / (1 + step / 500) if name == "loss" else 0.01
    return {"job_id": job_id, "name": name, "step": step, "value": value}


@contextmanager
def api(url: str, folder: Path):
    env = os.environ | {
        "TRAINSERVE_DATABASE_URL": url,
        "TRAINSERVE_ARTIFACTS_DIR": str(folder / "artifacts"),
        "TRAINSERVE_BROKER_URL": "filesystem://",
        "TRAINSERVE_BROKER_DIR": str(folder / "broker"),
        "TRAINSERVE_ADMIN_KEY": ADMIN_KEY,
    }
    base = f"http://127.0.0.1:{PORT}"
    with open(folder / "api.log", "wb") as log:
        process = subprocess.Popen(
            # as `make run` serves (Makefile SERVE): Granian, the access log on
            [
                Path(sys.executable).with_name("granian"),
                *("--interface", "asgi", "--access-log", "--port", str(PORT)),
                "app.main:app",
            ],
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/readyz").status_code in (200, 503):
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def poll(page: Page, expression: str, timeout_s: float = 30):
    """The expression's first truthy value in the page. Polled from here: the pages' CSP
    refuses the eval that Playwright's wait_for_function runs in the page; the figures are
    the page's own timestamps, which polling does not change."""
    deadline = time.monotonic() + timeout_s
    while not (value := page.evaluate(expression)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waiting for {expression}")
        time.sleep(0.002)
    return value


def mark_ms(page: Page, name: str) -> float:
    """When the page set the mark, in ms from its navigation's start."""
    return poll(page, f"performance.getEntriesByName('{name}')[0]?.startTime")


def timed_loads(page: Page, url: str, mark: str, loads: int) -> list[float]:
    page.goto(url)
    mark_ms(page, mark)  # the first load: the browser's cache is warm afterwards, as in use
    times = []
    for _ in range(loads):
        page.reload()
        times.append(mark_ms(page, mark))
    return times


def weight_kb(page: Page) -> tuple[float, float]:
    """The response bodies the page has fetched so far (as sent, before decoding), in KB:
    its own files (under /ui/), and the API's answers."""
    sizes = page.evaluate(
        "[performance.getEntriesByType('navigation')[0],"
        " ...performance.getEntriesByType('resource')]"
        ".map((r) => [new URL(r.name).pathname.startsWith('/ui/'), r.encodedBodySize])"
    )
    files = sum(size for own, size in sizes if own)
    answers = sum(size for own, size in sizes if not own)
    return files / 1000, answers / 1000


def cold_weight(browser, base: str, fragment: str, mark: str) -> tuple[float, float]:
    """A first load of the page in a new browser context (nothing cached), signed in."""
    context = browser.new_context()
    context.add_init_script(f"sessionStorage.setItem('trainserve.key', '{ADMIN_KEY}')")
    page = context.new_page()
    page.goto(f"{base}/ui/#/{fragment}")
    mark_ms(page, mark)
    time.sleep(1)  # the sparklines' requests after the table (a run page's stream stays open)
    kb = weight_kb(page)
    context.close()
    return kb


def sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/ui/")
    page.fill("#key", ADMIN_KEY)
    page.click("button[type=submit]")
    page.wait_for_selector("table.runs")


def step_latency_ms(page: Page, url: str, job_id: str, steps: int, tries: int = 5) -> list[float]:
    """From a step's commit until the open run page's loss chart counts one point more."""
    engine = make_engine(url)
    latencies = []
    with sessionmaker(bind=engine)() as session:
        for step in range(steps, steps + tries):
            before = int(page.get_attribute("#chart-loss", "data-points") or 0)
            started = time.perf_counter()
            record_steps(session, job_id, BENCH_WORKER, [(step, 1, 0.5, 0.01)])
            poll(page, f"Number(document.querySelector('#chart-loss').dataset.points) > {before}")
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.3)
    engine.dispose()
    return latencies


def summary(values: list[float], unit: str = "ms") -> str:
    return f"median {statistics.median(values):.0f} {unit}, max {max(values):.0f} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the API up, to look around")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, database(args.database, Path(folder)) as url:
        started = time.perf_counter()
        long_job = store_jobs(url, args.jobs, args.steps)
        print(
            f"{args.database}: stored {args.jobs} jobs and one of {args.steps:,} steps "
            f"in {time.perf_counter() - started:.1f} s; load average {os.getloadavg()[0]:.1f}"
        )
        with api(url, Path(folder)) as base, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            sign_in(page, base)
            runs = timed_loads(page, f"{base}/ui/#/runs", "runs:data", args.loads)
            print(f"runs page, {args.jobs} jobs, first page shown: {summary(runs)}")
            run_url = f"{base}/ui/#/run?id={long_job}"
            curves = timed_loads(page, run_url, "run:curves", args.loads)
            print(f"run page, {args.steps:,} steps, curves drawn: {summary(curves)}")
            latency = step_latency_ms(page, url, long_job, args.steps)
            print(f"a new step, commit to drawn: {summary(latency)}")
            for name, fragment, mark in (
                ("runs", "runs", "runs:data"),
                ("run", f"run?id={long_job}", "run:curves"),
            ):
                files, answers = cold_weight(browser, base, fragment, mark)
                print(
                    f"page weight, {name} page: {files:.0f} KB of files, "
                    f"{answers:.0f} KB of API answers"
                )
            browser.close()
            if args.keep:
                input(f"{base}/ui/ with key {ADMIN_KEY}; Enter stops it")


if __name__ == "__main__":
    main()
