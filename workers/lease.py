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
from typing import Protocol, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.config import Settings
from app.periodic import Periodic
from app.store.db import get_session_factory
from app.store.lifecycle import LeaseLost, confirm_cancelled, renew_lease
from app.store.outage import DATABASE_UNREACHABLE, OutageNotice
from app.store.tables import JobStatus

log = logging.getLogger("trainserve.worker")
T = TypeVar("T")


class JobCancelled(Exception):
    """The job was asked to stop; raised between two training steps."""


class WorkerStopping(Exception):
    """This worker is shutting down: the job goes back to the queue, to resume elsewhere."""


class DatabaseGone(Exception):
    """The database stayed unreachable for settings.database_wait_seconds."""


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
        self._outage = OutageNotice(log, f"job {job_id}: heartbeats")

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
        except DATABASE_UNREACHABLE as exc:
            # Nobody can take the job while the database is down (the sweeper needs it
            # too): the next beat that lands renews the lease.
            self._outage.failed(exc)
            self._session.rollback()
            return
        except SQLAlchemyError as exc:
            log.warning("job %s: heartbeat failed: %s", self.job_id, exc)
            self._session.rollback()
            return
        self._outage.recovered()
        if status is None:  # the training thread says so, when it stops at its next step
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


class OutageWait:
    """Runs one of an attempt's writes, waiting out a database outage: while the database
    cannot be reached, the write is tried again every heartbeat and training waits (no
    one can take the job meanwhile: the sweeper needs the database too). Once it answers,
    the write lands, or raises LeaseLost if the job was taken over after all. A stop
    (cancel, worker stopping) still stops the wait; after settings.database_wait_seconds
    it raises DatabaseGone."""

    def __init__(self, job_id: str, session: Session, lease: LeaseCheck, settings: Settings):
        self.session, self.lease, self.settings = session, lease, settings
        self._outage = OutageNotice(log, f"job {job_id}: training waits for its writes")

    def __call__(self, write: Callable[[], T]) -> T:
        gives_up_at = time.monotonic() + self.settings.database_wait_seconds
        while True:
            try:
                done = write()
            except DATABASE_UNREACHABLE as exc:
                self.session.rollback()
                self._outage.failed(exc)
                if time.monotonic() >= gives_up_at:
                    raise DatabaseGone(str(exc)) from exc
                self.lease.check()
                time.sleep(self.settings.heartbeat_seconds)
                continue
            self._outage.recovered()
            return done
