"""The artefact store's figures: a dataset's first and second read on a worker (download
vs the read cache), and a job's throughput with the S3 store against the local folder.

    .venv/bin/python bench/artefact_store.py [--epochs 2] [--rounds 2]

In this process, against moto's S3 server (a real HTTP server on loopback, started
here), with CIFAR-10's test set (10,000 images) decoded as an upload stores it:

1. The dataset is written to the bucket by one "machine" and read on another with its
   own read cache: the first read downloads and checks it, the second checks the cached
   copy; each followed by the load training does (torch.load).
2. The same job (tutorial_cnn, batch 64, one thread) runs on the embedded defaults with
   the local folder and with the bucket, in turns (local, S3, local, S3, …) as a shared
   machine's load drifts: training samples/s (what a job reports) and the job's whole
   time (data read, every epoch's checkpoint upload, the model's registration).
Figures are ratios against the other in the same run; nothing is asserted.
"""

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import get_settings
from app.store.artefacts import S3Store, load, save
from app.store.cache import ReadCache
from app.store.db import get_session_factory
from models.data import NamedFile, ReadOptions, read_upload
from tests.conftest import SHARED_DATA, clear_cached_settings, migrate
from tests.utils.jobs import queue_image_job, reloaded
from tests.utils.s3 import CREDENTIALS, moto_server
from workers.runner import run_job

CIFAR_TEST = SHARED_DATA / "cifar10" / "cifar10-test.zip"


def read_figures(s3, folder: Path) -> None:
    data = read_upload([NamedFile("test.zip", io.BytesIO(CIFAR_TEST.read_bytes()))], ReadOptions())
    url = f"s3://{s3.bucket}/bench"
    api = S3Store(url, s3.endpoint_url, ReadCache(folder / "api-cache", 1 << 34))
    sha256 = save(api, "datasets/cifar10-test.pt", data.to_state())
    worker = S3Store(url, s3.endpoint_url, ReadCache(folder / "worker-cache", 1 << 34))
    size = api.size("datasets/cifar10-test.pt")
    timings = []
    for _ in ("first", "second"):
        started = time.perf_counter()
        load(worker, "datasets/cifar10-test.pt", sha256)
        timings.append(time.perf_counter() - started)
    first, second = timings
    print(f"dataset: CIFAR-10 test, {size / 1e6:.1f} MB stored")
    print(f"  first read on a worker (download, sha256, load): {first:.3f} s")
    print(f"  second read (cache: sha256, load):               {second:.3f} s")
    print(f"  first / second: {first / second:.2f}")


def job_figures(s3, folder: Path, epochs: int, rounds: int) -> None:
    upload = CIFAR_TEST.read_bytes()
    runs: dict[str, list[tuple[float, float]]] = {"local": [], "s3": []}
    for turn in range(rounds):
        for store in ("local", "s3"):
            runs[store].append(_one_job(s3, folder / f"{store}-{turn}", store, upload, epochs))
    print(f"job: tutorial_cnn on CIFAR-10 test, {epochs} epoch(s), batch 64, 1 thread")
    median = {
        store: (statistics.median(r[0] for r in found), statistics.median(r[1] for r in found))
        for store, found in runs.items()
    }
    for store, (rate, wall) in median.items():
        each = ", ".join(f"{r:.0f}" for r, _ in runs[store])
        print(f"  {store:5}: {rate:7.0f} samples/s (median of {each}), job {wall:.1f} s")
    rate_ratio = median["s3"][0] / median["local"][0]
    wall_ratio = median["local"][1] / median["s3"][1]
    print(
        f"  S3 / local: samples/s {rate_ratio:.3f}; "
        f"job speed (local time / S3 time) {wall_ratio:.3f}"
    )


def _one_job(s3, folder: Path, store: str, upload: bytes, epochs: int) -> tuple[float, float]:
    url = f"sqlite:///{folder}/trainserve.db"
    folder.mkdir(parents=True)
    os.environ |= {
        "TRAINSERVE_DATABASE_URL": url,
        "TRAINSERVE_ARTIFACTS_DIR": str(folder / "artifacts"),
        "TRAINSERVE_CACHE_DIR": str(folder / "cache"),
        "TRAINSERVE_BROKER_URL": "filesystem://",
        "TRAINSERVE_BROKER_DIR": str(folder / "broker"),
        "TRAINSERVE_TORCH_THREADS": "1",
    }
    for name, value in s3.env(f"bench-{folder.name}").items():
        if store == "s3":
            os.environ[name] = value
        elif name.startswith("TRAINSERVE_"):
            os.environ.pop(name, None)
    clear_cached_settings()
    migrate(url)
    settings = get_settings()
    with get_session_factory()() as session:
        hyperparameters = {"epochs": epochs, "batch_size": 64, "lr": 0.01}
        job_id = queue_image_job(session, settings, upload, hyperparameters=hyperparameters)
        started = time.perf_counter()
        run_job(job_id)
        wall = time.perf_counter() - started
        job = reloaded(session, job_id)
        if job.status != "succeeded":
            raise SystemExit(f"the {store} job {job_id} ended {job.status}: {job.error}")
        rate = statistics.mean(epoch.samples_per_second for epoch in job.history)
    return rate, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    os.environ |= CREDENTIALS
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as name, moto_server(Path(name)) as s3:
        read_figures(s3, Path(name))
        job_figures(s3, Path(name), args.epochs, args.rounds)


if __name__ == "__main__":
    main()
