"""A worker's hold on one job: a heartbeat thread renews it and watches for a cancel.

The database decides who runs a job, not the broker: a job whose lease is not
renewed for `lease_seconds` is re-queued by the API's sweeper, whatever the broker
thinks of the message that started it.
"""

import logging
import multiprocessing
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.periodic import Periodic
from app.store.db import get_session_factory
from app.store.lifecycle import LeaseLost, confirm_cancelled, renew_lease
from app.store.tables import JobStatus

log = logging.getLogger("trainserve.worker")


class JobCancelled(Exception):
    """The job was asked to stop; raised between two training steps."""


class WorkerStopping(Exception):
    """This worker is shutting down: the job goes back to the queue, to resume elsewhere."""


# Set by the worker's main process when it shuts down (workers/celery_app.py). The pool's
# child processes are forked from it, so they share this event.
worker_stopping = multiprocessing.get_context("fork").Event()


class LeaseCheck(Protocol):
    """What training asks between two steps: raise to stop (cancel, lease lost, stopping)."""

    def check(self) -> None: ...


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def exit_process() -> None:
    # The last resort when a cancelled job does not reach its next step: the pool
    # replaces this child process, and the worker is free again.
    os._exit(1)


class Lease:
    """Renews the job's lease every heartbeat; `check()` raises in the training thread.

    Leave the `with` block before writing the attempt's outcome: the heartbeat stops there,
    so that no beat lands after the final commit and mistakes the lease it gave up for one
    taken away."""

    def __init__(
        self,
        job_id: str,
        owner: str,
        settings: Settings,
        hard_stop: Callable[[], None] = exit_process,
    ):
        self.job_id, self.owner, self.settings, self.hard_stop = job_id, owner, settings, hard_stop
        self.cancel_requested = threading.Event()
        self.lost = threading.Event()
        self._cancel_seen_at: float | None = None
        self._session = get_session_factory()()
        self._heartbeat = Periodic(self.renew, settings.heartbeat_seconds, name=f"lease-{job_id}")

    def __enter__(self) -> "Lease":
        self._heartbeat.start()
        return self

    def __exit__(self, *_) -> None:
        self._heartbeat.stop()
        self._session.close()

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(self.job_id)
        if self.cancel_requested.is_set():
            raise JobCancelled(self.job_id)
        if worker_stopping.is_set():
            raise WorkerStopping(self.job_id)

    def renew(self) -> None:
        """One heartbeat: extend the lease, and notice a cancel or a lease taken away."""
        try:
            status = renew_lease(
                self._session, self.job_id, self.owner, self.settings.lease_seconds
            )
        except SQLAlchemyError as exc:  # the database may come back before the lease ends
            log.warning("job %s: heartbeat failed: %s", self.job_id, exc)
            self._session.rollback()
            return
        if status is None:
            log.warning("job %s: lease lost, another worker may run it", self.job_id)
            self.lost.set()
            self._heartbeat.stop()
        elif status == JobStatus.CANCELLING:
            self._on_cancel()

    def _on_cancel(self) -> None:
        now = time.monotonic()
        if self._cancel_seen_at is None:
            log.info("job %s: cancel requested", self.job_id)
            self._cancel_seen_at = now
            self.cancel_requested.set()
        elif now - self._cancel_seen_at > self.settings.cancel_grace_seconds:
            log.error("job %s: no training step ended since the cancel; stopping hard", self.job_id)
            confirm_cancelled(self._session, self.job_id, self.owner)
            self.hard_stop()
