"""One job trained by N CPU ranks (DDP on gloo) against the same job in one process, through
the worker's runner on the embedded defaults (SQLite): per-epoch losses side by side, and
samples/s.

    PYTHONPATH=. TRAINSERVE_TORCH_THREADS=1 .venv/bin/python bench/ddp_cpu.py \\
        [--train 6000] [--epochs 2] [--ranks 2] [--batch 64]

MNIST's first --train images, tutorial_cnn without dropout or augmentation (nothing drawn
at random per rank), batch_size --batch: for the group, the global batch, --batch / N per
rank. Each rank gets TRAINSERVE_TORCH_THREADS threads (the single process as well).
Figures, never asserts.
"""

import argparse
import gzip
import io
import os
import tempfile
import time
from pathlib import Path

import torch

PROJECT = Path(__file__).resolve().parents[1]
MNIST = PROJECT.parent / "shared" / "data" / "mnist"


def use_embedded_defaults(folder: Path) -> str:
    """The service's settings on a database and artefact folder of this run's own."""
    url = f"sqlite:///{folder}/trainserve.db"
    os.environ |= {
        "TRAINSERVE_DATABASE_URL": url,
        "TRAINSERVE_ARTIFACTS_DIR": str(folder / "artifacts"),
        "TRAINSERVE_BROKER_URL": "filesystem://",
        "TRAINSERVE_BROKER_DIR": str(folder / "broker"),
    }
    return url


def mnist_files(train: int) -> list:
    """The first `train` MNIST training images and labels, as IDX uploads."""
    from models.data import NamedFile

    files = []
    for name, header, item in (("train-images-idx3", 16, 784), ("train-labels-idx1", 8, 1)):
        raw = gzip.decompress((MNIST / f"{name}-ubyte.gz").read_bytes())
        count = train.to_bytes(4, "big")
        kept = raw[:4] + count + raw[8:header] + raw[header : header + train * item]
        files.append(NamedFile(f"{name}-ubyte", io.BytesIO(kept)))
    return files


def queue(session, settings, dataset_id: str, ranks: int, args) -> str:
    from app.jobspec import JobSpec
    from app.recipes import facts_of_dataset, resolve
    from app.store.datasets import get_dataset
    from app.store.jobs import add_job

    spec = JobSpec.model_validate(
        {
            "task": "image_classification",
            "dataset_id": dataset_id,
            "model": {"arch": "tutorial_cnn"},
            "device": "cpu",
            "resources": {"processes": ranks},
            "augmentation": {"crop_padding": 0, "horizontal_flip": False},
            "hyperparameters": {"epochs": args.epochs, "batch_size": args.batch, "dropout": 0.0},
        }
    )
    dataset = get_dataset(session, dataset_id)
    resolved = resolve(spec, facts_of_dataset(dataset, spec.validation))
    return add_job(session, resolved.spec, resolved.sources, resolved.planned_epochs).id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        migrate_url = use_embedded_defaults(Path(name))
        from app.config import get_settings
        from app.ingest import ingest_upload
        from app.store.db import get_session_factory
        from models.data import ReadOptions
        from tests.conftest import migrate
        from tests.utils.jobs import reloaded
        from workers.runner import run_job

        migrate(migrate_url)
        settings = get_settings()
        # As a worker's pool process sets it (workers/celery_app.py); the ranks set their own.
        torch.set_num_threads(settings.torch_threads or os.cpu_count() or 1)
        with get_session_factory()() as session:
            dataset, _ = ingest_upload(
                session, settings, mnist_files(args.train), None, ReadOptions()
            )
            jobs = {
                ranks: queue(session, settings, dataset.id, ranks, args)
                for ranks in (1, args.ranks)
            }
            walls = {}
            for ranks, job_id in jobs.items():
                started = time.perf_counter()
                run_job(job_id)
                walls[ranks] = time.perf_counter() - started
            report(session, jobs, walls, reloaded, args)


def report(session, jobs: dict, walls: dict, reloaded, args) -> None:
    single, group = (reloaded(session, jobs[ranks]) for ranks in (1, args.ranks))
    threads = os.environ.get("TRAINSERVE_TORCH_THREADS", "all")
    print(
        f"MNIST {args.train} images, tutorial_cnn, global batch {args.batch}, "
        f"{threads} thread(s) per rank, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}"
    )
    n = args.ranks
    columns = ["epoch", "train_loss 1 rank", f"train_loss {n} ranks", "difference"]
    columns += ["val_loss 1", f"val_loss {n}", "samples/s 1", f"samples/s {n}"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---:|" * len(columns))
    for a, b in zip(single.history, group.history, strict=True):
        print(
            f"| {a.epoch} | {a.train_loss:.6f} | {b.train_loss:.6f} | "
            f"{abs(a.train_loss - b.train_loss):.1e} | {a.val_loss:.6f} | {b.val_loss:.6f} | "
            f"{a.samples_per_second:.0f} | {b.samples_per_second:.0f} |"
        )
    print(
        f"status {single.status} / {group.status}; wall time of the attempt (ranks' start "
        f"included): {walls[1]:.1f} s / {walls[args.ranks]:.1f} s"
    )


if __name__ == "__main__":
    main()
