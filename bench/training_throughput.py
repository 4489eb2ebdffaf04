"""A job's training throughput beside plain PyTorch loops on the same network and data.

    make run            # in another terminal (or any trainserve URL)
    .venv/bin/python bench/training_throughput.py [--url …] [--epochs 3] [--only fast_resnet,…]

For each network a job trains in the service's worker (10 % of the data held out, no
augmentation, so that both sides do the same work). Then, in this process and with the same
thread count, the same network trains on the same examples with plain loops (half of their epochs
before the job, half after, as the load of a shared machine drifts): one that
slices shuffled tensors (what a careful user writes) and, for tutorial_cnn, the tutorial's
DataLoader loop. Only the training phase is timed, as the job's samples_per_second is.

- tutorial_cnn: CIFAR-10, batch 64, SGD, float32 (the "Core" issue's figure).
- fast_resnet: CIFAR-10, batch 256, SGD, bf16 autocast where the CPU has native bf16 and
  channels_last, as the job's defaults choose.
- text_cnn: MR sentences, batch 64, Adam; each batch cut to its longest sentence.
"""

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from client import SHARED_DATA, Service
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from app.config import get_settings
from models.data import NamedFile, ReadOptions, read_upload
from models.image import FastResNet, TutorialCNN
from models.text import TextCNN, Vocabulary, pad_batch
from workers.recipe import cpu_has_native_bf16

HOLDOUT = {"source": "holdout", "fraction": 0.1}
# What the plain loops do, pinned in the job: left out, the network's recipe would add
# Nesterov momentum, weight decay, a schedule and label smoothing (app/recipes.py).
PLAIN_SGD = {
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 0.0,
    "lr_schedule": "constant",
    "label_smoothing": 0.0,
}
PLAIN_ADAM = {"optimizer": "adam", "lr_schedule": "constant", "label_smoothing": 0.0}
PLAIN_TEXT = {"max_tokens": 256, "min_freq": 2, "ngrams": 1}  # as mr_tokens() builds it
NO_AUGMENTATION = {"crop_padding": 0, "horizontal_flip": False}


@dataclass
class Case:
    job: dict  # the job spec, less dataset_id
    upload: Callable[[Service], str]  # uploads the data, returns the dataset id
    examples: Callable[[], tuple[torch.Tensor, torch.Tensor]]  # the same training examples
    network: Callable[[torch.Tensor], nn.Module]  # built for these inputs
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    batch: int
    autocast: torch.dtype | None = None
    cut_padding: bool = False  # text: each batch cut to its longest example


def read(path) -> object:
    with open(path, "rb") as file:
        return read_upload([NamedFile(path.name, file)], ReadOptions())


def held_in(count: int) -> torch.Tensor:
    """A random 90 % of the examples, the size of the job's training split."""
    keep = count - round(count * 0.1)
    return torch.randperm(count, generator=torch.Generator().manual_seed(0))[:keep]


def cifar_images() -> tuple[torch.Tensor, torch.Tensor]:
    """45,000 normalised float images and their labels, decoded once, outside the timing."""
    data = read(SHARED_DATA / "cifar10" / "cifar10-train.zip")
    keep = held_in(len(data.labels))
    images = data.images[keep].float() / 255
    mean, std = images.mean(dim=(0, 2, 3), keepdim=True), images.std(dim=(0, 2, 3), keepdim=True)
    return (images - mean) / std, data.labels[keep]


def mr_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    data = read(SHARED_DATA / "rt-polarity" / "rt-polarity.csv")
    keep = held_in(len(data.labels))
    texts = [data.texts[i] for i in keep.tolist()]
    vocabulary = Vocabulary.build(texts, min_freq=2)
    return pad_batch([vocabulary.encode(t) for t in texts], 5), data.labels[keep]


def upload_cifar(service: Service) -> str:
    return service.upload(SHARED_DATA / "cifar10" / "cifar10-train.zip", name="cifar10-train")["id"]


def upload_mr(service: Service) -> str:
    return service.upload(SHARED_DATA / "rt-polarity" / "rt-polarity.csv", name="mr")["id"]


def sgd(network: nn.Module, lr: float, nesterov: bool = False) -> torch.optim.Optimizer:
    return torch.optim.SGD(network.parameters(), lr=lr, momentum=0.9, nesterov=nesterov)


CASES = {
    "tutorial_cnn": Case(
        job={
            "task": "image_classification",
            "model": {"arch": "tutorial_cnn"},
            "hyperparameters": {**PLAIN_SGD, "batch_size": 64, "lr": 0.01, "nesterov": False},
        },
        upload=upload_cifar,
        examples=cifar_images,
        network=lambda _: TutorialCNN(num_classes=10),
        optimizer=lambda network: sgd(network, 0.01),
        batch=64,
    ),
    "fast_resnet": Case(
        job={
            "task": "image_classification",
            "model": {"arch": "fast_resnet"},
            "hyperparameters": {**PLAIN_SGD, "batch_size": 256, "lr": 0.05, "nesterov": True},
        },
        upload=upload_cifar,
        examples=cifar_images,
        network=lambda _: FastResNet(num_classes=10).to(memory_format=torch.channels_last),
        optimizer=lambda network: sgd(network, 0.05, nesterov=True),
        batch=256,
        autocast=torch.bfloat16 if cpu_has_native_bf16() else None,
    ),
    "text_cnn": Case(
        job={
            "task": "text_sentiment",
            "model": {"arch": "text_cnn"},
            "hyperparameters": {**PLAIN_ADAM, "batch_size": 64, "lr": 0.001},
            "text": PLAIN_TEXT,
        },
        upload=upload_mr,
        examples=mr_tokens,
        network=lambda tokens: TextCNN(num_classes=2, vocab_size=int(tokens.max()) + 1),
        optimizer=lambda network: torch.optim.Adam(network.parameters(), lr=0.001),
        batch=64,
        cut_padding=True,
    ),
}


def job_throughput(service: Service, case: Case, epochs: int) -> float:
    spec = case.job | {"dataset_id": case.upload(service), "validation": HOLDOUT}
    spec["hyperparameters"] = spec["hyperparameters"] | {"epochs": epochs}
    if spec["task"] == "image_classification":
        spec["augmentation"] = NO_AUGMENTATION
    job = service.train(spec, poll_s=5)  # polls cost the shared CPU too
    return statistics.median(epoch["samples_per_second"] for epoch in job["history"])


def sliced_batches(inputs: torch.Tensor, labels: torch.Tensor, case: Case):
    order = torch.randperm(len(labels))
    memory = torch.channels_last if inputs.ndim == 4 else torch.contiguous_format
    for start in range(0, len(labels), case.batch):
        index = order[start : start + case.batch]
        batch = inputs[index]
        if case.cut_padding:
            batch = batch[:, : max(int((batch != 0).sum(dim=1).max()), 5)]
        yield batch.contiguous(memory_format=memory), labels[index]


def plain_epoch(batches, network: nn.Module, optimizer, autocast: torch.dtype | None) -> None:
    network.train()
    for inputs, labels in batches:
        optimizer.zero_grad()
        mixed = torch.autocast("cpu", dtype=autocast) if autocast else contextlib.nullcontext()
        with mixed:
            logits = network(inputs)
        loss = nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()


def loop_rates(case: Case, inputs, make_batches: Callable, count: int, epochs: int):
    torch.manual_seed(0)
    network = case.network(inputs)
    optimizer = case.optimizer(network)
    rates = []
    for _ in range(epochs):
        started = time.perf_counter()
        plain_epoch(make_batches(), network, optimizer, case.autocast)
        rates.append(count / (time.perf_counter() - started))
    return rates


def compare(service: Service, name: str, epochs: int) -> None:
    """Plain-loop epochs before and after the job, so that a load that changes while the job
    runs (a shared machine) weighs on both sides alike."""
    case = CASES[name]
    inputs, labels = case.examples()
    loops = {"plain loop, sliced tensors": lambda: sliced_batches(inputs, labels, case)}
    if name == "tutorial_cnn":
        loader = DataLoader(TensorDataset(inputs, labels), batch_size=case.batch, shuffle=True)
        loops["plain loop, DataLoader"] = lambda: loader
    rates = {
        loop: loop_rates(case, inputs, make, len(labels), epochs) for loop, make in loops.items()
    }
    job = job_throughput(service, case, epochs)
    for loop, make in loops.items():
        rates[loop] += loop_rates(case, inputs, make, len(labels), epochs)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{name + ': trainserve job':42} {job:>10.0f} {1:>11.3f}  {load}")
    for loop, measured in rates.items():
        rate = statistics.median(measured)
        print(f"{name + ': ' + loop:42} {rate:>10.0f} {job / rate:>11.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated networks")
    args = parser.parse_args()
    torch.set_num_threads(get_settings().torch_threads or os.cpu_count() or 1)  # as the worker
    service = Service(args.url)
    print(
        f"median of {args.epochs} job epochs, and of {2 * args.epochs} plain-loop epochs (half "
        f"before the job, half after); the loops: {torch.get_num_threads()} threads (the "
        f"worker's TRAINSERVE_TORCH_THREADS must be the same), CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {cpu_has_native_bf16()}"
    )
    print(f"{'':42} {'samples/s':>10} {'job / this':>11}  load avg (1, 5, 15 min)")
    for name in args.only.split(","):
        compare(service, name, args.epochs)


if __name__ == "__main__":
    main()
