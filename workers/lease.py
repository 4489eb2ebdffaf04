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

from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.store.db import get_session_factory
from app.store.lifecycle import LeaseLost, confirm_cancelled, renew_lease

log = logging.getLogger("trainserve.worker")


class JobCancelled(Exception):
    """The job was asked to stop; raised between two training steps."""


class WorkerStopping(Exception):
    """This worker is shutting down: the job goes back to the queue, to resume elsewhere."""


# Set by the worker's main process when it shuts down (workers/celery_app.py). The pool's
# child processes are forked from it, so they share this event.
worker_stopping = multiprocessing.get_context("fork").Event()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def exit_process() -> None:
    # The last resort when a cancelled job does not reach its next step: the pool
    # replaces this child process, and the worker is free again.
    os._exit(1)


class Lease:
    """Renews the job's lease every heartbeat; `check()` raises in the training thread."""

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
        self._done = threading.Event()
        self._cancel_seen_at: float | None = None
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._done.set()
        self._thread.join()

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(self.job_id)
        if self.cancel_requested.is_set():
            raise JobCancelled(self.job_id)
        if worker_stopping.is_set():
            raise WorkerStopping(self.job_id)

    def _beat(self) -> None:
        with get_session_factory()() as session:
            while not self._done.wait(self.settings.heartbeat_seconds):
                try:
                    status = renew_lease(
                        session, self.job_id, self.owner, self.settings.lease_seconds
                    )
                except SQLAlchemyError as exc:  # the database may come back before the lease ends
                    log.warning("job %s: heartbeat failed: %s", self.job_id, exc)
                    session.rollback()
                    continue
                if status is None:
                    log.warning("job %s: lease lost, another worker may run it", self.job_id)
                    self.lost.set()
                    return
                if status == "cancelling":
                    self._on_cancel(session)

    def _on_cancel(self, session) -> None:
        now = time.monotonic()
        if self._cancel_seen_at is None:
            log.info("job %s: cancel requested", self.job_id)
            self._cancel_seen_at = now
            self.cancel_requested.set()
        elif now - self._cancel_seen_at > self.settings.cancel_grace_seconds:
            log.error("job %s: no training step ended since the cancel; stopping hard", self.job_id)
            confirm_cancelled(session, self.job_id, self.owner)
            self.hard_stop()
