"""Per-step progress: the training thread only buffers each step's loss; a writer thread
stores the buffer about once a second, so database writes never hold up a step."""

import logging
import threading
import time
from collections import deque

import torch
from sqlalchemy.exc import SQLAlchemyError

from app.periodic import Periodic
from app.store.db import get_session_factory
from app.store.lifecycle import LeaseLost
from app.store.outage import DATABASE_UNREACHABLE, OutageNotice
from app.store.records import record_steps
from workers.lease import LeaseCheck
from workers.resources import ResourceSampler

log = logging.getLogger("trainserve.worker")


class TimeLimitReached(Exception):
    """The spec's limits.max_run_seconds is used up."""


class StepReporter:
    """Called after every training step. Stops training at once when the job is cancelled,
    its lease lost or its time up; use it as a context manager to run its writer. Its
    writes are fenced by the lease of `owner`: once the job is another's, the steps are
    dropped and the next step stops training."""

    def __init__(
        self,
        job_id: str,
        owner: str,
        lease: LeaseCheck,
        optimizer: torch.optim.Optimizer,
        steps_per_epoch: int,
        *,
        first_step: int,
        deadline: float,
        flush_seconds: float,
        resources: ResourceSampler | None = None,
    ):
        self.job_id, self.owner, self.lease, self.optimizer = job_id, owner, lease, optimizer
        self.lost = False  # a write found the lease taken over
        self.resources = resources
        self.steps_per_epoch, self.step = steps_per_epoch, first_step
        self.deadline = deadline
        self.pending: deque[tuple[int, torch.Tensor, float]] = deque()  # appends are atomic
        self._lock = threading.Lock()
        self._session = get_session_factory()()
        self._writer = Periodic(self._write, flush_seconds, name=f"steps-{job_id}")
        self._outage = OutageNotice(log, f"job {job_id}: step writes (kept until it is back)")

    def __enter__(self) -> "StepReporter":
        self._writer.start()
        return self

    def __exit__(self, *_) -> None:
        self._writer.stop()
        self._session.close()

    def __call__(self, loss: torch.Tensor) -> None:
        self.step += 1
        self.pending.append((self.step, loss, self.optimizer.param_groups[0]["lr"]))
        if self.lost:
            raise LeaseLost(self.job_id)
        self.lease.check()
        if time.monotonic() >= self.deadline:
            raise TimeLimitReached

    def flush(self) -> None:
        """Store the buffered steps; safe from the writer and the training thread alike."""
        with self._lock:
            taken = [self.pending.popleft() for _ in range(len(self.pending))]
            if not taken:
                return
            # One device-to-host copy for the whole buffer, not one per step.
            losses = torch.stack([loss for _, loss, _ in taken]).tolist()
            steps = [
                (step, (step - 1) // self.steps_per_epoch + 1, value, lr)
                for (step, _, lr), value in zip(taken, losses, strict=True)
            ]
            used = self.resources.sample() if self.resources else None
            try:
                record_steps(self._session, self.job_id, self.owner, steps, used)
            except LeaseLost:
                self.lost = True  # what was taken is dropped: the job is another's now
                self.pending.clear()
                raise
            except SQLAlchemyError:
                self._session.rollback()
                self.pending.extendleft(reversed(taken))  # kept for the next try
                raise

    def _write(self) -> None:
        try:
            self.flush()
        except LeaseLost:
            self._writer.stop()  # the training thread stops at its next step
        except DATABASE_UNREACHABLE as exc:  # kept; the epoch's end waits for the database
            self._outage.failed(exc)
        except SQLAlchemyError as exc:  # the epoch's end will try again, and fail loudly
            log.warning("job %s: could not store steps: %s", self.job_id, exc)
        else:
            self._outage.recovered()
