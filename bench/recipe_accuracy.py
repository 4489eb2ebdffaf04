"""The text recipes' own figures, the goals of bench/defaults.py: each network's recipe
(docs/recipes.md) trained in this process, one thread, on defaults.py's MR split (90/10,
seed 0), validated on its held-out tenth.

    TRAINSERVE_TORCH_THREADS=1 .venv/bin/python bench/recipe_accuracy.py [--only text_cnn]

The job through the service fills the same spec (app/recipes.py), so the two differ only by
the service's own path and the thread count (two threads sum in another order than one).
"""

import argparse
import time
from pathlib import Path

import torch
from defaults import RECIPE_ACCURACY, mr_split

from app.jobspec import JobSpec
from models.data import LabelledData, NamedFile, ReadOptions, read_upload, with_test_split
from workers.recipe import prepare_run
from workers.training import EpochResult


def read_csv(path: Path) -> LabelledData:
    with open(path, "rb") as file:
        return read_upload([NamedFile(path.name, file)], ReadOptions())


def train(arch: str, files: dict) -> tuple[float, int, float]:
    """Best held-out accuracy, its epoch, and the seconds the run took."""
    data = with_test_split(read_csv(files["train"]), read_csv(files["held-out"]))
    spec = JobSpec.model_validate(
        {
            "task": "text_sentiment",
            "dataset_id": "mr-train",
            "model": {"arch": arch},
            "validation": {"dataset_id": "mr-held-out"},
        }
    )
    run = prepare_run(spec, data)
    results: list[EpochResult] = []
    started = time.monotonic()
    run.fit(run.epochs, results.append)
    best = max(results, key=lambda r: r.val_accuracy)
    return best.val_accuracy, best.epoch, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(RECIPE_ACCURACY))
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = mr_split()
    print(f"{'network':20} {'best acc':>8} {'epoch':>5} {'seconds':>7}  in defaults.py")
    for arch in args.only.split(","):
        accuracy, epoch, seconds = train(arch, files)
        print(f"{arch:20} {accuracy:8.4f} {epoch:5d} {seconds:7.0f}  {RECIPE_ACCURACY[arch]:.4f}")


if __name__ == "__main__":
    main()
