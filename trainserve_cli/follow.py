"""`jobs follow`: a job's events as a live progress bar over its epochs and steps (loss, val
accuracy, ETA) with a line per status change and per epoch, or as JSON lines for scripts."""

import math
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from trainserve_cli.api import Api
from trainserve_cli.events import JobEvent, job_events
from trainserve_cli.exits import ENDED, ExitCode, exit_code_of
from trainserve_cli.output import err, out, print_json, shown

EPOCH_FIGURES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def follow(api: Api, job_id: str, *, as_json: bool, retry_for: float) -> ExitCode:
    """Follow the job until it ends; how it ended, as an exit code."""
    if as_json:
        return _follow_as_json(api, job_id, retry_for)
    job = api.get(f"/jobs/{job_id}")
    with JobProgress(job, _steps_per_epoch_guess(api, job)) as view:
        # The epoch count is read again at each attempt's first step: a time budget's is
        # sized by the worker before that step.
        sized = False
        for event in job_events(api, job_id, retry_for, view.reconnecting):
            if event.kind == "status":
                sized = False
            elif event.kind == "step" and not sized:
                view.set_epochs(api.get(f"/jobs/{job_id}")["epochs"])
                sized = True
            view.show(event)
    job = api.get(f"/jobs/{job_id}")
    out.print(outcome(job), markup=False)
    return exit_code_of(job)


def _follow_as_json(api: Api, job_id: str, retry_for: float) -> ExitCode:
    """One JSON object per event, {"id", "event", "data"}; reconnects noted on stderr."""
    final: dict[str, Any] = {}

    def reconnecting(problem: str, last_id: int) -> None:
        err.print(f"connection lost ({problem}); reconnecting after event {last_id}", markup=False)

    for event in job_events(api, job_id, retry_for, reconnecting):
        print_json(event.as_json(), one_line=True)
        final = event.data
    return exit_code_of(final)


def _steps_per_epoch_guess(api: Api, job: dict[str, Any]) -> int | None:
    """Until the first epoch ends and tells: the training examples over the batch. It
    counts a validation holdout as training, so the first epoch's ETA is a little long."""
    hyper = job["spec"].get("hyperparameters", {})
    batch = hyper.get("batch_size", 0) * hyper.get("accumulate_batches", 1)
    if not batch:
        return None
    counts = api.get(f"/datasets/{job['dataset_id']}")["counts"]
    return math.ceil(sum(counts.get("train", {}).values()) / batch) or None


class JobProgress:
    """One bar over the run's steps, labelled with the epoch, and lines printed above it."""

    def __init__(self, job: dict[str, Any], steps_per_epoch: int | None):
        self.epochs, self.steps_per_epoch = job["epochs"], steps_per_epoch
        self.last_step: tuple[int, int] | None = None  # (step, epoch) of the latest step event
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps {task.fields[loss]} {task.fields[val_accuracy]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=out,
            disable=not out.is_interactive,  # a pipe or a file: the lines alone
        )
        self.task = self.bar.add_task(
            self._epoch_label(0), total=None, start=False, loss="", val_accuracy=""
        )
        self._say(f"job {job['id']}: {job['name']}, {job['arch']}, {job['epochs']} epoch(s)")

    def __enter__(self) -> "JobProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.stop()

    def reconnecting(self, problem: str, last_id: int) -> None:
        self._say(f"connection lost ({problem}); reconnecting after event {last_id}")

    def _say(self, line: str) -> None:
        """A line above the bar, as it is: an error's [brackets] are no markup."""
        self.bar.console.print(line, markup=False)

    def set_epochs(self, epochs: int) -> None:
        self.epochs = epochs
        self.bar.update(self.task, total=self._total_steps())

    def show(self, event: JobEvent) -> None:
        data = event.data
        if event.kind == "status":
            self._status(data)
        elif event.kind == "step":
            self._step(data["step"], data["epoch"], data["loss"])
        elif event.kind == "epoch":
            self._epoch(data)

    def _status(self, data: dict[str, Any]) -> None:
        if data["status"] in ENDED:  # outcome() says how it ended, with its figures
            return
        line = data["status"]
        if data.get("attempt"):
            line += f" (attempt {data['attempt']})"
        if data.get("resumed_from_epoch"):
            line += f", resumed from epoch {data['resumed_from_epoch']}"
        if data.get("error"):
            line += f": {data['error']}"
        self._say(line)
        if data["status"] == "running":
            self.bar.start_task(self.task)

    def _step(self, step: int, epoch: int, loss: float) -> None:
        if self.last_step and epoch > self.last_step[1] and step == self.last_step[0] + 1:
            # The step before was an epoch's last: now its length is known, not guessed.
            self.steps_per_epoch = self.last_step[0] // self.last_step[1]
        self.last_step = (step, epoch)
        total = self._total_steps()
        self.bar.update(
            self.task,
            completed=step,
            total=max(total, step) if total else None,
            description=self._epoch_label(epoch),
            loss=f"loss {loss:.4f}",
        )

    def _epoch(self, entry: dict[str, Any]) -> None:
        figures = " ".join(f"{name} {shown(entry[name])}" for name in EPOCH_FIGURES)
        self._say(
            f"epoch {entry['epoch']}/{self.epochs}: {figures} "
            f"({entry['seconds']:.1f} s, {entry['samples_per_second']:,.0f} samples/s)"
        )
        self.bar.update(self.task, val_accuracy=f"val_accuracy {entry['val_accuracy']:.4f}")

    def _total_steps(self) -> int | None:
        return self.steps_per_epoch * self.epochs if self.steps_per_epoch else None

    def _epoch_label(self, epoch: int) -> str:
        return f"epoch {epoch}/{self.epochs}"


def outcome(job: dict[str, Any]) -> str:
    """How the job ended (or stands), in one line: its best accuracy and model, or why not."""
    status, reason = job["status"], job.get("end_reason")
    line = f"{status} ({reason})" if reason else status
    if job.get("duration_seconds") is not None:
        line += f" in {job['duration_seconds']:.1f} s"
    if job.get("best_val_accuracy") is not None:
        line += f": best val_accuracy {job['best_val_accuracy']:.4f} (epoch {job['best_epoch']})"
    if job.get("model_id"):
        line += f", model {job['model_id']} ({job['name']})"
    if job.get("error"):
        line += f": {job['error']}"
    return line
