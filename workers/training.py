"""A task-agnostic training loop that reports through a callback. No Celery, no SQL."""

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.lr_scheduler import LRScheduler


class Batches:
    """Mini-batches sliced from tensors already in memory (no per-item Dataset overhead)."""

    def __init__(
        self,
        make_inputs: Callable[[torch.Tensor], torch.Tensor],
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        self.make_inputs = make_inputs
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.shard = shard  # (rank, ranks): this rank's share of each pass

    def sharded(self, rank: int, ranks: int, batch_size: int | None = None) -> "Batches":
        """Rank `rank`'s share of every pass, as DistributedSampler deals it: every rank
        shuffles alike (the same generator state) and takes every `ranks`-th example of
        the order. With batches of batch_size / ranks, one step of all ranks sees the
        examples one step of a single process with batch_size would."""
        return Batches(
            self.make_inputs,
            self.labels,
            batch_size or self.batch_size,
            shuffle=self.shuffle,
            generator=self.generator,
            shard=(rank, ranks),
        )

    def __len__(self) -> int:
        return len(self._starts(len(self._order())))

    def _starts(self, count: int) -> range:
        """Where each batch starts. A last batch of one example joins the one before: batch
        norm cannot train on a single example whose features are 1x1 (it raises)."""
        lone_last = count > self.batch_size and count % self.batch_size == 1
        return range(0, count - 1 if lone_last else count, self.batch_size)

    def _order(self, shuffled: bool = False) -> torch.Tensor:
        """The examples of one pass, in order; this rank's share of them."""
        count = len(self.labels)
        order = torch.randperm(count, generator=self.generator) if shuffled else torch.arange(count)
        rank, ranks = self.shard
        if ranks == 1:
            return order
        if self.shuffle:
            # Training ranks take as many steps each (every step waits for all of them): the
            # last count % ranks examples of the shuffle sit this pass out.
            order = order[: count - count % ranks]
        return order[rank::ranks]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order(shuffled=self.shuffle)
        count = len(order)
        starts = self._starts(count)
        for start in starts:
            stop = count if start == starts[-1] else start + self.batch_size
            index = order[start:stop]
            yield self.make_inputs(index), self.labels[index]


@dataclass
class StepOptions:
    """How each optimisation step is taken, beyond the optimizer and its schedule."""

    label_smoothing: float = 0.0
    grad_clip_norm: float | None = None
    accumulate: int = 1  # batches whose gradients add up before one optimizer step
    autocast_dtype: torch.dtype | None = None  # bfloat16 / float16 mixed precision, or None
    scaler: torch.amp.GradScaler | None = None  # float16 only: keeps small gradients alive

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def steps_per_epoch(self, batches: int) -> int:
        return -(-batches // self.accumulate)


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float
    samples_per_second: float

    def as_dict(self) -> dict:
        return asdict(self)


def train_one_epoch(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    device: torch.device,
    scheduler: LRScheduler | None = None,
    on_step: Callable[[torch.Tensor], None] | None = None,
    options: StepOptions | None = None,
) -> tuple[float, float, int]:
    """One pass over the data: forward, loss, backward, update. Returns loss, accuracy, count.

    `on_step` gets each batch's loss as a device tensor (reading it is the caller's choice: a
    GPU synchronises on .item()); it may raise to stop training between two steps. The
    optimizer (and the schedule) step once every `options.accumulate` batches.
    """
    options = options or StepOptions()
    network.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    optimizer.zero_grad(set_to_none=True)
    for number, (inputs, labels) in enumerate(batches, start=1):
        inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with options.autocast(device):
            logits = network(inputs)
        loss = nn.functional.cross_entropy(
            logits.float(), labels, label_smoothing=options.label_smoothing
        )
        scaled = loss / options.accumulate
        (options.scaler.scale(scaled) if options.scaler else scaled).backward()
        if number % options.accumulate == 0 or number == len(batches):
            _update(network, optimizer, options)
            if scheduler is not None:
                scheduler.step()
        if on_step is not None:
            on_step(loss.detach())
        # Kept on the device: a .item() per step would synchronise a GPU every batch.
        loss_sum += loss.detach() * len(labels)
        correct += (logits.detach().argmax(dim=1) == labels).sum()
        seen += len(labels)
    loss_total, correct_total, seen_total = summed_over_ranks(
        [loss_sum.item(), correct.item(), seen], device
    )
    return loss_total / seen_total, correct_total / seen_total, int(seen_total)


def summed_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Each value summed over the ranks of a DistributedDataParallel group, so that every
    rank reports the whole pass; unchanged in a process of its own."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    summed = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(summed)
    return summed.tolist()


def _update(network: nn.Module, optimizer: torch.optim.Optimizer, options: StepOptions) -> None:
    scaler = options.scaler
    if options.grad_clip_norm is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(network.parameters(), options.grad_clip_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def evaluate(
    network: nn.Module,
    batches: Batches,
    device: torch.device,
    options: StepOptions | None = None,
) -> tuple[float, float]:
    options = options or StepOptions()
    network.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    with torch.inference_mode():
        for inputs, labels in batches:
            inputs, labels = inputs.to(device), labels.to(device)
            with options.autocast(device):
                logits = network(inputs).float()
            loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(dim=1) == labels).sum().item()
            seen += len(labels)
    loss_total, correct_total, seen_total = summed_over_ranks([loss_sum, correct, seen], device)
    return loss_total / seen_total, correct_total / seen_total


def fit(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: Batches,
    validation: Batches,
    *,
    epochs: int,
    device: torch.device,
    on_epoch_end: Callable[[EpochResult], bool | None],
    scheduler: LRScheduler | None = None,
    first_epoch: int = 1,
    on_step: Callable[[torch.Tensor], None] | None = None,
    options: StepOptions | None = None,
    evaluated: nn.Module | None = None,
) -> None:
    """Train epochs first_epoch..epochs, reporting each one; on_epoch_end returns True to stop.

    `evaluated` is what validates when not the network trained: the module inside a
    DistributedDataParallel wrapper, whose every forward would wait for the other ranks."""
    network.to(device)
    for epoch in range(first_epoch, epochs + 1):
        started = time.perf_counter()
        train_loss, train_accuracy, seen = train_one_epoch(
            network, optimizer, train, device, scheduler, on_step, options
        )
        train_seconds = time.perf_counter() - started
        val_loss, val_accuracy = evaluate(evaluated or network, validation, device, options)
        stop = on_epoch_end(
            EpochResult(
                epoch,
                train_loss,
                train_accuracy,
                val_loss,
                val_accuracy,
                seconds=time.perf_counter() - started,
                samples_per_second=seen / train_seconds,
            )
        )
        if stop:
            return


def epochs_without_improvement(
    values: list[float], higher_is_better: bool, min_delta: float
) -> int:
    """How many epochs since the value last beat its best by more than min_delta."""
    best, since = None, 0
    for value in values:
        score = value if higher_is_better else -value
        if best is None or score > best + min_delta:
            best, since = score, 0
        else:
            since += 1
    return since
