"""CIFAR-10 on a GPU with the service's own training code: time to 94 % and images/s.

    bash bench/gpu_check.sh            # installs the project if needed, then runs this
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
import os
import statistics
import time
from pathlib import Path

import torch

from app.jobspec import JobSpec
from models.data import NamedFile, ReadOptions, read_upload, with_test_split
from workers.distributed import Ranks
from workers.recipe import prepare_run
from workers.training import EpochResult

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
GOAL = 0.94


def cifar10(limit: int | None):
    parts = []
    for split in ("train", "test"):
        path = DATA / f"cifar10-{split}.zip"
        with open(path, "rb") as file:
            parts.append(read_upload([NamedFile(path.name, file)], ReadOptions()))
    data = with_test_split(*parts)
    if limit:  # a smoke run: a random sample of the training and test images
        shuffled = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(0))
        train, test = shuffled[~data.is_test[shuffled]], shuffled[data.is_test[shuffled]]
        keep = torch.cat([train[:limit], test[: max(limit // 5, 1)]])
        for name in ("labels", "is_test", "images"):
            setattr(data, name, getattr(data, name)[keep])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--limit", type=int, help="only N random training images (smoke test)")
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
            "model": {"arch": "fast_resnet", "width": args.width},
            "validation": {"source": "test_split"},
            "device": args.device,
            "resources": resources,
            "hyperparameters": {
                "epochs": args.epochs,
                "batch_size": args.batch * ranks.world,  # the global batch
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
    )
    run = prepare_run(ranks.spec_for_rank(spec), data)
    ranks.distribute(run, compile_network=not args.no_compile)
    name = torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else "CPU"
    say(
        f"{name} x{ranks.world}, {run.options.autocast_dtype}, width {args.width}, "
        f"batch {args.batch} per rank"
    )
    trained_s, reached = 0.0, None
    speeds: list[float] = []

    def report(result: EpochResult) -> None:
        nonlocal trained_s, reached
        trained_s += result.seconds
        speeds.append(result.samples_per_second)  # the whole group's, summed over ranks
        if reached is None and result.val_accuracy >= GOAL:
            reached = trained_s
        say(
            f"epoch {result.epoch:>3}  val_accuracy {result.val_accuracy:.4f}  "
            f"{result.samples_per_second:>8.0f} images/s  {trained_s:>6.1f} s of training",
            flush=True,
        )

    run.fit(args.epochs, report)
    say(
        f"time to {GOAL:.0%}: {f'{reached:.1f} s' if reached else 'not reached'}; "
        f"{trained_s:.1f} s of training (the first epoch includes compiling); "
        f"{time.perf_counter() - started:.0f} s in all; load avg {os.getloadavg()[0]:.1f}"
    )
    steady = statistics.median(speeds[1:] or speeds)  # past the first epoch's compiling
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
