"""What hearing of registry changes costs a request, and how soon a change is heard.

    .venv/bin/python bench/registry_watch.py [--calls 100000] [--moves 200]
        [--databases sqlite,postgresql]

Each API process asks its registry watch (app/registry_watch.py) whether the registry
changed before it answers a /predict from what it has loaded. For each database (a fresh
one: a SQLite file, or a database of its own on TRAINSERVE_BENCH_POSTGRES, as
bench/job_api.py makes them), with two versions of a model stored through the store's own
functions, it prints in one run:

- the time of one `heard()` when nothing changed (what every request pays, on the event
  loop), beside the same run's parse of a one-text /predict body (what every request
  pays already) and their ratio, beside the watch that hears nothing (polling only), and
  beside a query of the generation through SQLAlchemy (what asking the database on every
  request would cost, before any thread hop);
- on SQLite, the time of a `heard()` after another connection committed (it then reads
  the generation too), and how many of `--moves` alias moves the first `heard()` after
  the move's commit saw;
- on PostgreSQL, over `--moves` alias moves made in another thread: how long after the
  move's commit returned the listener's callback ran on an asyncio event loop (p50, p99,
  max), and how long a move took.

The machine is shared: read the figures beside the load average printed with them. It
prints; it asserts nothing.
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from job_api import database, migrate, service_env
from sqlalchemy.orm import Session

from app.config import Settings
from app.registry_watch import RegistryWatch, registry_watch
from app.routes.predict import predict_request
from app.store.db import make_engine
from app.store.tables import Dataset, Job, ModelVersion
from app.store.versions import GENERATION, add_version, move_alias

NAME, TASK = "bench", "text_sentiment"
BODY = b'{"text": "a gripping, beautifully acted film"}'


def load_average() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def per_call_us(call: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


def store_two_versions(session: Session) -> list[str]:
    """Two versions of NAME, stored as a job's success stores one; their ids."""
    dataset = Dataset(
        name="d",
        task=TASK,
        format="csv",
        sha256="0" * 64,
        fingerprint="f",
        size_bytes=0,
        classes=["negative", "positive"],
        counts={},
        details={},
        path="-",
    )
    session.add(dataset)
    session.flush()
    ids = []
    for _ in range(2):
        job = Job(
            task=TASK, dataset_id=dataset.id, name=TASK, arch="tutorial_cnn", spec={}, epochs=1
        )
        session.add(job)
        session.flush()
        model = ModelVersion(
            job_id=job.id,
            name=NAME,
            task=TASK,
            arch="bag_of_embeddings",
            classes=dataset.classes,
            metrics={},
            checkpoint_path="-",
            sha256="0" * 64,
        )
        add_version(session, job, model)
        ids.append(model.id)
    session.commit()
    return ids


def move(session: Session, versions: list[str], number: int) -> None:
    move_alias(session, NAME, "production", versions[number % 2], action="moved", moved_by=None)


def print_costs(kind: str, watch: RegistryWatch, url: str, calls: int) -> None:
    parse = per_call_us(lambda: predict_request("application/json", BODY), calls)
    nothing = per_call_us(RegistryWatch().heard, calls)
    heard = per_call_us(watch.heard, calls)
    with Session(make_engine(url)) as session:
        # What asking the database instead costs: the generation read on every request.
        query = per_call_us(lambda: session.scalar(GENERATION), calls // 10)
    print(
        f"{kind}: heard() {heard:.2f} us when nothing changed; a /predict body's parse "
        f"{parse:.2f} us (ratio {heard / parse:.2f}); polling only {nothing:.2f} us; "
        f"the generation queried through SQLAlchemy {query:.2f} us (ratio "
        f"{query / parse:.2f}); {load_average()}",
        flush=True,
    )


async def sqlite_figures(settings: Settings, versions: list[str], args) -> None:
    watch = registry_watch(settings, on_heard=lambda: None)
    await watch.connect()
    print_costs("sqlite", watch, settings.database_url, args.calls)
    seen, after_commit = 0, []
    with Session(make_engine(settings.database_url)) as session:
        for number in range(args.moves):
            before = watch.heard()
            move(session, versions, number)
            started = time.perf_counter()
            seen += watch.heard() != before
            after_commit.append((time.perf_counter() - started) * 1e6)
    watch.close()
    print(
        f"sqlite: heard() after another connection's commit {statistics.median(after_commit):.2f}"
        f" us (median); the first heard() after a move's commit saw {seen} of {args.moves} "
        f"moves; {load_average()}",
        flush=True,
    )


async def postgres_figures(settings: Settings, versions: list[str], args) -> None:
    arrivals: list[float] = []
    arrived = asyncio.Event()

    def on_heard() -> None:  # on the event loop, when the notification reached the socket
        arrivals.append(time.perf_counter())
        arrived.set()

    watch = registry_watch(settings, on_heard=on_heard)
    await watch.connect()
    print_costs("postgresql", watch, settings.database_url, args.calls)
    delays, durations = [], []
    with Session(make_engine(settings.database_url)) as session:
        for number in range(args.moves):
            arrivals.clear()
            arrived.clear()
            started, committed = await asyncio.to_thread(timed_move, session, versions, number)
            await asyncio.wait_for(arrived.wait(), 10)
            delays.append((arrivals[0] - committed) * 1e3)
            durations.append((committed - started) * 1e3)
    watch.close()
    delays.sort()
    print(
        f"postgresql: a move heard {delays[len(delays) // 2]:.2f} ms (p50), "
        f"{delays[int(len(delays) * 0.99)]:.2f} ms (p99), {delays[-1]:.2f} ms (max) after its "
        f"commit returned (min {delays[0]:.2f}: before the mover's thread ran again), over "
        f"{args.moves} moves; a move took {statistics.median(durations):.2f} ms (median); "
        f"{load_average()}",
        flush=True,
    )


def timed_move(session: Session, versions: list[str], number: int) -> tuple[float, float]:
    """A move in the mover's thread: when it started, and when its commit returned."""
    started = time.perf_counter()
    move(session, versions, number)
    return started, time.perf_counter()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000, help="heard() calls timed")
    parser.add_argument("--moves", type=int, default=200, help="alias moves made")
    parser.add_argument("--databases", default="sqlite,postgresql")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    print(f"{os.cpu_count()} cores; {load_average()}", flush=True)
    figures = {"sqlite": sqlite_figures, "postgresql": postgres_figures}
    for kind in args.databases.split(","):
        with tempfile.TemporaryDirectory(prefix="trainserve-bench-") as tmp:
            folder = Path(tmp)
            with database(kind, folder) as url:
                migrate(service_env(kind, url, folder))
                with Session(make_engine(url)) as session:
                    versions = store_two_versions(session)
                asyncio.run(figures[kind](Settings(database_url=url), versions, args))


if __name__ == "__main__":
    sys.exit(main())
