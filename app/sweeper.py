"""The API's background sweep: the database is the source of truth, the broker a signal.

Every few seconds it re-queues jobs whose worker stopped renewing its lease, and
re-sends queued jobs that the broker lost (a Redis that restarted empty), so no
accepted job is ever stranded.
"""

import logging
from datetime import timedelta

from celery import Celery
from kombu.exceptions import OperationalError as BrokerUnreachable
from sqlalchemy.exc import OperationalError as DatabaseUnreachable
from sqlalchemy.orm import Session

from app.broker import enqueue_training, queue_length
from app.config import Settings
from app.periodic import Periodic
from app.store.db import get_session_factory
from app.store.jobs import count_queued, queued_job_ids
from app.store.lifecycle import expired_leases, recover_expired
from app.store.tables import JobStatus, utcnow

log = logging.getLogger("trainserve.sweeper")


def recover_lost_workers(session: Session, celery: Celery) -> dict[str, JobStatus]:
    """Jobs whose lease expired: re-queued (and sent), cancelled or failed. Returns id → outcome."""
    outcomes = {}
    for job in expired_leases(session):
        job_id, owner, queue = job.id, job.lease_owner, job.queue
        outcome = recover_expired(session, job)
        if outcome is None:
            continue  # a heartbeat arrived in between
        outcomes[job_id] = outcome
        log.warning("job %s: worker %s lost; job %s", job_id, owner, outcome)
        if outcome == JobStatus.QUEUED:
            enqueue_training(celery, job_id, queue)
    return outcomes


def resend_lost_messages(session: Session, celery: Celery, grace_seconds: float) -> int:
    """Send one message per queued job the broker does not account for, queue by queue.
    Returns how many.

    Any message makes a worker of the queue run its oldest queued job, so counting is
    enough. Jobs queued in the last `grace_seconds` are left out: their message may still
    be on its way.
    """
    sent = 0
    for queue, queued in count_queued(session, utcnow() - timedelta(seconds=grace_seconds)).items():
        missing = queued - queue_length(celery, queue)
        if missing <= 0:
            continue
        job_ids = queued_job_ids(session, limit=missing, queue=queue)
        for job_id in job_ids:
            enqueue_training(celery, job_id, queue)
        log.warning("re-sent %d queued job(s) the broker had lost: %s", len(job_ids), job_ids)
        sent += len(job_ids)
    return sent


def sweep(session: Session, celery: Celery, settings: Settings) -> None:
    recover_lost_workers(session, celery)
    resend_lost_messages(session, celery, grace_seconds=max(settings.sweep_seconds, 1.0))


class Sweeper:
    """Runs `sweep` every settings.sweep_seconds in a daemon thread of the API process."""

    def __init__(self, settings: Settings, celery: Celery):
        self.settings, self.celery = settings, celery
        self._sweeps = Periodic(self._sweep_once, settings.sweep_seconds, name="sweeper")

    def start(self) -> None:
        if self.settings.sweep_seconds > 0:
            self._sweeps.start()

    def stop(self) -> None:
        self._sweeps.stop()

    def _sweep_once(self) -> None:
        # An outage is the service's state, not a bug: one line, and the next sweep tries
        # again. Anything else reaches Periodic, which logs it with its traceback.
        try:
            with get_session_factory()() as session:
                sweep(session, self.celery, self.settings)
        except (BrokerUnreachable, DatabaseUnreachable) as exc:
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            log.warning(
                "sweep skipped, retried in %g s: %s", self.settings.sweep_seconds, first_line
            )
