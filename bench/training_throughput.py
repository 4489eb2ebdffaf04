"""A job's training throughput beside plain PyTorch loops on the same network and data.

    make run            # in another terminal (or any trainserve URL)
    .venv/bin/python bench/training_throughput.py [--url …] [--epochs 3]

The job trains tutorial_cnn on the CIFAR-10 train zip (90 % of it; 10 % held out)
in the service's worker. Then, in this process and with the same thread count, the
same network trains on the same 45,000 images with two plain loops: one that slices
shuffled tensors (what a careful user writes) and the tutorial's DataLoader loop.
Only the training phase is timed, as the job's samples_per_second is.
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from client import SHARED_DATA, Service
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from models.data import NamedFile, ReadOptions, read_upload
from models.image import TutorialCNN

BATCH, LR = 64, 0.01


def job_throughput(service: Service, epochs: int) -> float:
    dataset = service.upload(SHARED_DATA / "cifar10" / "cifar10-train.zip", name="cifar10-train")
    job = service.train(
        {
            "task": "image_classification",
            "dataset_id": dataset["id"],
            "model": {"arch": "tutorial_cnn"},
            "validation": {"source": "holdout", "fraction": 0.1},
            "hyperparameters": {"epochs": epochs, "batch_size": BATCH, "lr": LR},
        }
    )
    return statistics.median(epoch["samples_per_second"] for epoch in job["history"])


def training_images() -> tuple[torch.Tensor, torch.Tensor]:
    """45,000 normalised float images and their labels, decoded once, outside the timing."""
    path = SHARED_DATA / "cifar10" / "cifar10-train.zip"
    with open(path, "rb") as file:
        data = read_upload([NamedFile(path.name, file)], ReadOptions())
    keep = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(0))[:45_000]
    images = data.images[keep].float() / 255
    mean, std = images.mean(dim=(0, 2, 3), keepdim=True), images.std(dim=(0, 2, 3), keepdim=True)
    return (images - mean) / std, data.labels[keep]


def plain_epoch(batches, network: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    network.train()
    for inputs, labels in batches:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(network(inputs), labels)
        loss.backward()
        optimizer.step()


def sliced_batches(images: torch.Tensor, labels: torch.Tensor):
    order = torch.randperm(len(labels))
    for start in range(0, len(labels), BATCH):
        index = order[start : start + BATCH]
        yield images[index], labels[index]


def loop_throughput(make_batches: Callable, count: int, epochs: int) -> float:
    torch.manual_seed(0)
    network = TutorialCNN(num_classes=10)
    optimizer = torch.optim.SGD(network.parameters(), lr=LR, momentum=0.9)
    rates = []
    for _ in range(epochs):
        started = time.perf_counter()
        plain_epoch(make_batches(), network, optimizer)
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)  # as the worker does

    job = job_throughput(Service(args.url), args.epochs)
    images, labels = training_images()
    loader = DataLoader(TensorDataset(images, labels), batch_size=BATCH, shuffle=True)
    baselines = {
        "plain loop, sliced tensors": loop_throughput(
            lambda: sliced_batches(images, labels), len(labels), args.epochs
        ),
        "plain loop, DataLoader": loop_throughput(lambda: loader, len(labels), args.epochs),
    }
    print(
        f"tutorial_cnn, CIFAR-10 45,000 images, batch {BATCH}, median of {args.epochs} epochs, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'':28} {'samples/s':>10} {'job / this':>11}")
    print(f"{'trainserve job':28} {job:>10.0f} {1:>11.3f}")
    for name, rate in baselines.items():
        print(f"{name:28} {rate:>10.0f} {job / rate:>11.3f}")


if __name__ == "__main__":
    main()
