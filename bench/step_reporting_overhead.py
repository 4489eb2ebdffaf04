"""What per-step progress costs training: the same epochs with and without it, in turns.

    .venv/bin/python bench/step_reporting_overhead.py [--epochs 6] [--threads 1]

tutorial_cnn trains on the real MNIST train set (60k images, batch 64) in this
process. Epochs alternate between the bare loop (`on_step=None`) and the worker's
StepReporter: every step's loss is buffered, the lease and the time limit are checked,
and the buffer is written to a SQLite database about once a second (the default
TRAINSERVE_STEP_FLUSH_SECONDS) by a writer thread, as in the worker. Alternating, with
each side going first in turn, keeps a busy machine from favouring one side. No service
needs to run.
"""

import argparse
import os
import statistics
import tempfile
import time

import torch
from client import SHARED_DATA

from app.config import get_settings
from app.ingest import ingest_upload
from app.jobspec import JobSpec
from app.recipes import facts_of_dataset, resolve
from app.store.db import get_engine, get_session_factory
from app.store.jobs import add_job
from app.store.lifecycle import claim_job
from app.store.tables import Base
from models.data import NamedFile, ReadOptions, data_from_state
from models.files import load_plain
from workers.lease import Lease
from workers.recipe import prepare_run
from workers.runner import StepReporter
from workers.training import train_one_epoch


def configure(folder: str) -> None:
    os.environ["TRAINSERVE_DATABASE_URL"] = f"sqlite:///{folder}/bench.db"
    os.environ["TRAINSERVE_ARTIFACTS_DIR"] = f"{folder}/artifacts"


def alternate_epochs(run, reporter: StepReporter, epochs: int) -> dict[str, list[float]]:
    kinds = [("bare loop", None), ("with per-step reporting", reporter)]
    rates: dict[str, list[float]] = {name: [] for name, _ in kinds}
    for epoch in range(epochs):
        for name, on_step in kinds if epoch % 2 else kinds[::-1]:  # neither always goes first
            started = time.perf_counter()
            _, _, seen = train_one_epoch(
                run.network, run.optimizer, run.train, run.device, on_step=on_step
            )
            rates[name].append(seen / (time.perf_counter() - started))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each kind")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configure(tempfile.mkdtemp())  # before the settings are first read
    settings = get_settings()
    Base.metadata.create_all(get_engine())
    with get_session_factory()() as session:
        folder = SHARED_DATA / "mnist"
        files = [
            NamedFile(name, open(folder / name, "rb"))  # noqa: SIM115 - read at once below
            for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
        ]
        dataset, _ = ingest_upload(session, settings, files, None, ReadOptions())
        spec = JobSpec.model_validate(
            {
                "task": "image_classification",
                "dataset_id": dataset.id,
                "model": {"arch": "tutorial_cnn"},
                "hyperparameters": {"batch_size": 64, "lr": 0.01},
            }
        )
        resolved = resolve(spec, facts_of_dataset(dataset, spec.validation))
        job = add_job(session, resolved.spec, resolved.sources, resolved.planned_epochs)
        claim_job(session, job.id, "bench", settings.lease_seconds)
        run = prepare_run(resolved.spec, data_from_state(load_plain(dataset.path)))
        rates: dict[str, list[float]] = {"bare loop": [], "with per-step reporting": []}
        with Lease(job.id, "bench", settings) as lease:
            reporter = StepReporter(
                job.id,
                lease,
                run.optimizer,
                len(run.train),
                first_step=0,
                deadline=float("inf"),
                flush_seconds=settings.step_flush_seconds,
            )
            with reporter:
                rates = alternate_epochs(run, reporter, args.epochs)
    bare = statistics.median(rates["bare loop"])
    print(
        f"{args.epochs} epochs each, {args.threads} torch thread(s), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'':28}{'samples/s':>10}{'/ bare':>8}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:28}{rate:10.0f}{rate / bare:8.3f}")


if __name__ == "__main__":
    main()
