"""CIFAR-10 on a GPU with the service's own training code: time to 94 % and images/s.

    bash bench/gpu_check.sh            # installs the project if needed, then runs this,
                                       # bench/gpu_check_service.py and the DDP group
    .venv/bin/python bench/gpu_check.py [--epochs 40] [--width 96] [--device cuda]
    .venv/bin/python -m torch.distributed.run --standalone --nproc-per-node N \
        bench/gpu_check.py --epochs 4 --baseline IMAGES_PER_S   # DDP: one rank per GPU

Started by torch's launcher, each rank trains its shard as a job of N ranks does in the
worker (workers/distributed.py: the spec as the rank trains it, its shard of every batch,
DistributedDataParallel), with --batch images per rank; rank 0 prints the group's
images/s and, given the one-GPU figure, the scaling efficiency.

The zips are decoded as an upload would decode them, then a job spec goes through
workers.recipe.prepare_run and TrainingRun.fit, exactly as in the worker (no HTTP, no
database: the GPU is what is measured). Recipe: fast_resnet, SGD with Nesterov momentum,
one-cycle schedule, label smoothing, bf16 autocast, channels_last, torch.compile.
"""

import argparse
import io
import os
import random
import statistics
import time
import zipfile
from pathlib import Path

import torch

from app.jobspec import JobSpec
from models.data import NamedFile, ReadOptions, read_upload, with_test_split
from workers.distributed import Ranks
from workers.recipe import prepare_run
from workers.training import EpochResult

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
GOAL = 0.94


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The options this check and bench/gpu_check_service.py share: what is trained."""
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--limit", type=int, help="only N random training images (smoke test)")


def recipe(args: argparse.Namespace, world: int = 1) -> dict:
    """The fastest recipe as a job spec's model and hyper-parameters; `world`: the ranks
    that share each batch (--batch images each)."""
    return {
        "model": {"arch": "fast_resnet", "width": args.width},
        "hyperparameters": {
            "epochs": args.epochs,
            "batch_size": args.batch * world,  # the global batch
            "optimizer": "sgd",
            "lr": 0.4,
            "nesterov": True,
            "weight_decay": 5e-4,
            "lr_schedule": "onecycle",
            "warmup_epochs": args.epochs / 5,
            "label_smoothing": 0.1,
            "compile": not args.no_compile,
        },
    }


class Progress:
    """A run's epochs so far: its training seconds, when it reached GOAL, its speeds."""

    def __init__(self) -> None:
        self.trained_s, self.reached_s = 0.0, None
        self.speeds: list[float] = []

    def add(self, epoch: int, val_accuracy: float, seconds: float, images_per_s: float) -> str:
        """Count an epoch that ended; the line that says how it went."""
        self.trained_s += seconds
        self.speeds.append(images_per_s)
        if self.reached_s is None and val_accuracy >= GOAL:
            self.reached_s = self.trained_s
        return (
            f"epoch {epoch:>3}  val_accuracy {val_accuracy:.4f}  "
            f"{images_per_s:>8.0f} images/s  {self.trained_s:>6.1f} s of training"
        )

    @property
    def reached(self) -> str:
        return f"{self.reached_s:.1f} s" if self.reached_s is not None else "not reached"

    @property
    def steady_speed(self) -> float:
        """The run's images/s: the median past the first epoch's compiling."""
        return statistics.median(self.speeds[1:] or self.speeds)


def cifar10_zip(split: str, limit: int | None) -> bytes:
    """The split's zip (train or test) as it is, or (a smoke run) a zip of a random sample
    of its images: `limit` training images and a fifth as many test ones."""
    source = DATA / f"cifar10-{split}.zip"
    if not limit:
        return source.read_bytes()
    count = limit if split == "train" else max(limit // 5, 1)
    sample = io.BytesIO()
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(sample, "w") as out:
        images = [name for name in archive.namelist() if not name.endswith("/")]
        for name in random.Random(0).sample(images, count):
            out.writestr(name, archive.read(name))
    return sample.getvalue()


def cifar10(limit: int | None):
    """Both splits decoded as an upload decodes them, the test zip as the test split."""
    parts = [
        read_upload(
            [NamedFile(f"{split}.zip", io.BytesIO(cifar10_zip(split, limit)))], ReadOptions()
        )
        for split in ("train", "test")
    ]
    return with_test_split(*parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(parser)
    parser.add_argument("--baseline", type=float, help="one GPU's images/s: for the efficiency")
    args = parser.parse_args()
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    ranks = Ranks.joined(kind) if "LOCAL_RANK" in os.environ else Ranks()
    say = print if ranks.leads else _quiet
    started = time.perf_counter()
    data = cifar10(args.limit)
    say(f"decoded {len(data.labels)} images in {time.perf_counter() - started:.1f} s")
    resources = {"device": kind, "gpus" if kind == "cuda" else "processes": ranks.world}
    spec = JobSpec.model_validate(
        {
            "task": "image_classification",
            "dataset_id": "cifar10",
            "validation": {"source": "test_split"},
            "device": args.device,
            "resources": resources,
            **recipe(args, ranks.world),
        }
    )
    run = prepare_run(ranks.spec_for_rank(spec), data)
    ranks.distribute(run, compile_network=not args.no_compile)
    name = torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else "CPU"
    say(
        f"{name} x{ranks.world}, {run.options.autocast_dtype}, width {args.width}, "
        f"batch {args.batch} per rank"
    )
    progress = Progress()

    def report(result: EpochResult) -> None:
        # samples_per_second: the whole group's, summed over ranks
        fields = (result.epoch, result.val_accuracy, result.seconds, result.samples_per_second)
        say(progress.add(*fields), flush=True)

    run.fit(args.epochs, report)
    say(
        f"time to {GOAL:.0%}: {progress.reached}; "
        f"{progress.trained_s:.1f} s of training (the first epoch includes compiling); "
        f"{time.perf_counter() - started:.0f} s in all; load avg {os.getloadavg()[0]:.1f}"
    )
    steady = progress.steady_speed
    say(f"images/s: {steady:.0f} on {ranks.world} {kind} rank(s) (median past epoch 1)")
    if args.baseline and ranks.several:
        efficiency = steady / (ranks.world * args.baseline)
        say(f"scaling efficiency: {efficiency:.2f} of {ranks.world} x {args.baseline:.0f}")
    if ranks.several:
        torch.distributed.destroy_process_group()


def _quiet(*_, **__) -> None:
    """What ranks other than 0 print: nothing, so that each figure is printed once."""


if __name__ == "__main__":
    main()
