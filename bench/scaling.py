"""How many workers one PostgreSQL carries: N simulated workers write what a training worker
writes, through the service's own store functions, against a real PostgreSQL.

    PYTHONPATH=. .venv/bin/python bench/scaling.py [--workers 1 10 50 100 200] [--seconds 8]

Each simulated worker holds a claimed job and, every second (--rate), does what a worker's
threads do (workers/lease.py, workers/progress.py, workers/runner.py): a heartbeat
(renew_lease), the last second's steps (record_steps: --steps metric points of loss and
learning rate, and as many step events), and every --epoch-seconds an epoch
(record_epoch: its row, four metric points, an event). The workers run as threads in
--processes processes, sharing --connections database connections in all (a real worker
holds three: the lease's, the step writer's, the runner's). Prints, for each N, the
transactions and rows written per second, the share of the intended rate achieved, and
the p50/p99 latency of each write. Figures, never asserts; docs/scaling.md reads them.
"""

import argparse
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, insert
from sqlalchemy.orm import Session, sessionmaker

from app.jobspec import JobSpec
from app.store.jobs import add_job
from app.store.lifecycle import claim_job, renew_lease
from app.store.records import record_epoch, record_steps
from app.store.tables import Dataset, new_id
from bench.ui import database, dataset_row

LEASE_SECONDS = 30.0
KINDS = ("heartbeat", "steps", "epoch")


def store_claimed_jobs(url: str, count: int) -> list[tuple[str, str]]:
    """`count` jobs, each claimed by a worker of its own: [(job id, owner)]."""
    engine = create_engine(url)
    dataset_id = new_id()
    jobs = []
    with Session(engine) as session:
        # One dataset per worker count: its content fingerprint must be unique.
        session.execute(insert(Dataset), [dataset_row(dataset_id) | {"fingerprint": dataset_id}])
        session.commit()
        spec = JobSpec.model_validate(
            {
                "task": "image_classification",
                "dataset_id": dataset_id,
                "model": {"arch": "tutorial_cnn"},
            }
        )
        for index in range(count):
            job = add_job(session, spec, {}, epochs=100)
            owner = f"sim-{index}"
            if not claim_job(session, job.id, owner, LEASE_SECONDS):
                raise RuntimeError(f"could not claim {job.id}")
            jobs.append((job.id, owner))
    engine.dispose()
    return jobs


class SimulatedWorker:
    """One worker's writes, at its pace, timed."""

    def __init__(self, sessions: sessionmaker, job_id: str, owner: str, args):
        self.sessions, self.job_id, self.owner, self.args = sessions, job_id, owner, args
        self.latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
        self.rows = 0
        self.ticks = 0  # writes done
        self.scheduled = 0  # writes due within the measured time
        self.step = 0

    def run(self, started: float, until: float) -> None:
        period = 1.0 / self.args.rate
        phase = int(self.owner.rpartition("-")[2])  # spread the workers' beats and epochs
        first = started + period * (phase % 97) / 97
        self.scheduled = int((until - first) // period) + 1
        epoch_every = max(1, round(self.args.epoch_seconds * self.args.rate))
        next_tick = first
        while self.ticks < self.scheduled and time.monotonic() < until:
            time.sleep(max(0.0, next_tick - time.monotonic()))
            self._tick(epoch_due=(self.ticks + phase) % epoch_every == 0)
            self.ticks += 1
            next_tick += period

    def _tick(self, epoch_due: bool) -> None:
        with self.sessions() as session:
            self._timed("heartbeat", renew_lease, session, self.job_id, self.owner, LEASE_SECONDS)
            epoch = self.step // 100 + 1
            steps = [(self.step + i, epoch, 0.5, 0.01) for i in range(1, self.args.steps + 1)]
            self.step += self.args.steps
            self._timed("steps", record_steps, session, self.job_id, self.owner, steps)
            self.rows += 1 + 3 * len(steps)  # the job's row; two points and an event a step
            if epoch_due:
                metrics = {
                    "epoch": self.ticks + 1,
                    "train_loss": 0.5,
                    "train_accuracy": 0.8,
                    "val_loss": 0.6,
                    "val_accuracy": 0.75,
                    "seconds": 30.0,
                    "samples_per_second": 1000.0,
                }
                self._timed(
                    "epoch",
                    record_epoch,
                    session,
                    self.job_id,
                    self.owner,
                    metrics,
                    self.step,
                    False,
                )
                self.rows += 1 + 1 + 4 + 1

    def _timed(self, kind: str, write, *arguments) -> None:
        started = time.perf_counter()
        write(*arguments)
        self.latencies[kind].append(time.perf_counter() - started)


def simulate_in_process(url: str, jobs: list, args, ready, results) -> None:
    """One process's share of the workers, one thread each; they start together with the
    other processes' (`ready`, a barrier), once every process has imported and connected."""
    connections = max(1, args.connections // args.processes)
    engine = create_engine(url, pool_size=connections, max_overflow=0, pool_timeout=60)
    sessions = sessionmaker(engine, expire_on_commit=False)
    workers = [SimulatedWorker(sessions, job_id, owner, args) for job_id, owner in jobs]
    with engine.connect():
        pass
    ready.wait()
    start_at = time.monotonic()
    until = start_at + args.seconds
    threads = [threading.Thread(target=w.run, args=(start_at, until)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()
    results.put(
        {
            "latencies": {k: [t for w in workers for t in w.latencies[k]] for k in KINDS},
            "rows": sum(w.rows for w in workers),
            "ticks": sum(w.ticks for w in workers),
            "scheduled": sum(w.scheduled for w in workers),
        }
    )


def measure(url: str, count: int, args) -> dict:
    jobs = store_claimed_jobs(url, count)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    shares = [
        share for share in (jobs[i :: args.processes] for i in range(args.processes)) if share
    ]
    ready = context.Barrier(len(shares))
    processes = [
        context.Process(target=simulate_in_process, args=(url, share, args, ready, results))
        for share in shares
    ]
    for process in processes:
        process.start()
    parts = [results.get() for _ in processes]
    for process in processes:
        process.join()
    latencies = {k: sorted(t for p in parts for t in p["latencies"][k]) for k in KINDS}
    ticks = sum(p["ticks"] for p in parts)
    return {
        "workers": count,
        "transactions_per_s": sum(len(v) for v in latencies.values()) / args.seconds,
        "rows_per_s": sum(p["rows"] for p in parts) / args.seconds,
        "achieved": ticks / sum(p["scheduled"] for p in parts),
        "latencies": latencies,
    }


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(share * len(values)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 10, 50, 100, 200])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured per worker count")
    parser.add_argument("--rate", type=float, default=1.0, help="ticks per second per worker")
    parser.add_argument("--steps", type=int, default=20, help="training steps per second")
    parser.add_argument("--epoch-seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=40, help="in all, shared")
    args = parser.parse_args()
    print(
        f"{args.steps} steps/s per worker, an epoch every {args.epoch_seconds:g} s, "
        f"{args.processes} processes sharing {args.connections} connections, "
        f"{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}"
    )
    header = ["workers", "transactions/s", "rows/s", "rate achieved"]
    header += [f"{kind} p50 / p99 ms" for kind in KINDS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    with tempfile.TemporaryDirectory() as folder, database("postgresql", Path(folder)) as url:
        for count in args.workers:
            row = measure(url, count, args)
            cells = [
                f"{percentile(times, 0.5):.1f} / {percentile(times, 0.99):.1f}"
                for times in (row["latencies"][kind] for kind in KINDS)
            ]
            print(
                f"| {count} | {row['transactions_per_s']:.0f} | {row['rows_per_s']:.0f} | "
                f"{row['achieved']:.2f} | " + " | ".join(cells) + " |",
                flush=True,
            )
    print(f"load avg {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
