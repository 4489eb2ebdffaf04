"""The epochs of a job with only a time budget: as many as fit, timed on its own steps.

A schedule (one-cycle, cosine) spans the whole run, so the epoch count must be known before
the first step. The worker trains a few steps of the run itself, times them and two
validation batches, puts the network, optimizer and random state back, and sizes the
epochs to the budget with a margin. That guess leaves out what only a whole epoch costs
(the validation pass at full length, checkpoints, reports, the machine's other load) and
ran 20-25 % short on a shared machine, so the time limit cut the schedule's last epochs,
where one-cycle anneals. After the first epoch, its real time sizes the run once more.
"""

import contextlib
import copy
import math
import time

import torch

from workers.recipe import TrainingRun
from workers.training import Batches, evaluate, train_one_epoch

WARMUP_STEPS = 2  # the first steps also build kernels and grow the allocator: not timed
TIMED_SECONDS = 1.0  # steps are timed until this much time has passed...
TIMED_STEPS = (5, 50)  # ...and at least, at most this many
MARGIN = 0.85  # of the budget: the estimate's error, checkpoints and the epochs' reports
# Of the time left after the first epoch, whose time has everything an epoch costs in it.
REPLAN_MARGIN = 0.9


class _Timed(Exception):
    """Raised from the step callback: enough steps are timed."""


def epochs_for_budget(run: TrainingRun, seconds: float, most: int) -> tuple[int, str]:
    """How many epochs of this run fit in `seconds` (1 to `most`), and how that was found."""
    state = _saved(run)
    try:
        train_seconds = _training_seconds_per_example(run) * len(run.train.labels)
        val_seconds = _evaluation_seconds_per_example(run) * len(run.validation.labels)
    finally:
        _restore(run, state)
    epoch_seconds = train_seconds + val_seconds
    epochs = max(1, min(most, math.floor(MARGIN * seconds / epoch_seconds)))
    return epochs, (
        f"budget: {epochs} epochs of about {epoch_seconds:.1f} s (timed on the run's first "
        f"steps) fit in {seconds:g} s, at most {most}"
    )


def epochs_after_first(first_seconds: float, seconds_left: float, most: int) -> tuple[int, str]:
    """The run's epochs (1 to `most`) once its first took `first_seconds` of the budget, with
    `seconds_left`; and how that was found."""
    more = max(0, math.floor(REPLAN_MARGIN * seconds_left / first_seconds))
    epochs = min(most, 1 + more)
    return epochs, (
        f"budget: {epochs} epochs (the first took {first_seconds:.1f} s; {more} more fit in "
        f"the {seconds_left:.0f} s left), at most {most}"
    )


def _training_seconds_per_example(run: TrainingRun) -> float:
    """Training time per example over the first steps of a pass, after the warm-up."""
    batches = run.train
    steps = min(len(batches), WARMUP_STEPS + TIMED_STEPS[1])
    first = Batches(
        batches.make_inputs,
        batches.labels[: steps * batches.batch_size],
        batches.batch_size,
        shuffle=False,
    )
    timing = _StepTimer()
    with contextlib.suppress(_Timed):
        train_one_epoch(
            run.module, run.optimizer, first, run.device, on_step=timing, options=run.options
        )
    return timing.seconds_per_example(batches.batch_size)


class _StepTimer:
    def __init__(self) -> None:
        self.steps = 0
        self.started = 0.0
        self.elapsed = 0.0

    def __call__(self, loss: torch.Tensor) -> None:
        loss.item()  # a GPU's step ends here
        self.steps += 1
        now = time.perf_counter()
        if self.steps == WARMUP_STEPS:
            self.started = now
            return
        timed = self.steps - WARMUP_STEPS
        self.elapsed = now - self.started
        if timed >= TIMED_STEPS[0] and (self.elapsed >= TIMED_SECONDS or timed >= TIMED_STEPS[1]):
            raise _Timed

    def seconds_per_example(self, batch_size: int) -> float:
        timed = self.steps - WARMUP_STEPS
        if timed <= 0:  # fewer batches than the warm-up: the whole pass was the warm-up
            return self.elapsed / max(1, self.steps * batch_size)
        return self.elapsed / (timed * batch_size)


def _evaluation_seconds_per_example(run: TrainingRun) -> float:
    validation = run.validation
    count = min(len(validation.labels), 2 * validation.batch_size)
    sample = Batches(
        validation.make_inputs, validation.labels[:count], validation.batch_size, shuffle=False
    )
    evaluate(run.module, sample, run.device, run.options)  # warm-up
    started = time.perf_counter()
    evaluate(run.module, sample, run.device, run.options)
    return (time.perf_counter() - started) / count


def _saved(run: TrainingRun) -> dict:
    state = {
        "network": copy.deepcopy(run.network.state_dict()),
        "optimizer": copy.deepcopy(run.optimizer.state_dict()),
        "torch_rng": torch.get_rng_state(),
        # The training batches' generator also draws the augmentation's crops and flips.
        "batches_rng": run.train.generator.get_state() if run.train.generator else None,
    }
    if run.scaler is not None:
        state["scaler"] = copy.deepcopy(run.scaler.state_dict())
    return state


def _restore(run: TrainingRun, state: dict) -> None:
    run.network.load_state_dict(state["network"])
    run.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if run.train.generator is not None:
        run.train.generator.set_state(state["batches_rng"])
    if run.scaler is not None:
        run.scaler.load_state_dict(state["scaler"])
