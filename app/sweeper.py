"""The API's background sweep: the database is the source of truth, the broker a signal.

Every few seconds it re-queues jobs whose worker stopped renewing its lease, re-sends the
messages of queued jobs and evaluations that the broker lost (a Redis that restarted empty),
and moves every running sweep on (app.tuning: the worker does so when a trial ends; this
pass covers a worker that died, an API that restarted, a sweep's time budget), so no
accepted job, evaluation or sweep is ever stranded.
"""

import logging
import time
from datetime import timedelta

from celery import Celery
from kombu.exceptions import OperationalError as BrokerUnreachable
from sqlalchemy.orm import Session

from app.broker import QUEUE, enqueue_evaluation, enqueue_training, queue_length
from app.config import Settings
from app.periodic import Periodic
from app.store.db import get_session_factory
from app.store.evaluations import (
    count_queued_evaluations,
    fail_stalled_evaluations,
    queued_evaluation_ids,
)
from app.store.jobs import count_queued, queued_job_ids
from app.store.lifecycle import expired_leases, recover_expired
from app.store.outage import DATABASE_UNREACHABLE, OutageNotice, first_line
from app.store.tables import JobStatus, utcnow
from app.tuning import advance_running_sweeps

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
    """Send one message per queued job or evaluation the broker does not account for,
    queue by queue. Returns how many.

    Counting is enough: any training message makes a worker of the queue run its oldest
    queued job, and a message repeated is harmless (what it names is no longer queued).
    Evaluations (on the CPU queue) are sent first, as each message names the one it runs:
    were a job's message sent for an evaluation's lost one, the evaluation would wait for
    as long as jobs are queued. What was queued in the last `grace_seconds` is left out:
    its message may still be on its way.
    """
    before = utcnow() - timedelta(seconds=grace_seconds)
    waiting = count_queued(session, before)
    waiting[QUEUE] = waiting.get(QUEUE, 0) + count_queued_evaluations(session, before)
    sent: list[str] = []
    for queue, queued in waiting.items():
        missing = queued - queue_length(celery, queue)
        if missing <= 0:
            continue
        evaluation_ids = (
            queued_evaluation_ids(session, before, limit=missing) if queue == QUEUE else []
        )
        for evaluation_id in evaluation_ids:
            enqueue_evaluation(celery, evaluation_id)
        job_ids = queued_job_ids(session, limit=missing - len(evaluation_ids), queue=queue)
        for job_id in job_ids:
            enqueue_training(celery, job_id, queue)
        sent += [*evaluation_ids, *job_ids]
    if sent:
        log.warning("re-sent %d message(s) the broker had lost: %s", len(sent), sent)
    return len(sent)


def end_stalled_evaluations(session: Session, max_seconds: float) -> list[str]:
    """Evaluations running past `max_seconds`: failed, saying why and what to do."""
    error = (
        f"not ended {max_seconds:g} s after it started (TRAINSERVE_EVALUATION_MAX_SECONDS): "
        "its worker stopped or is stuck; ask for the evaluation again"
    )
    started_before = utcnow() - timedelta(seconds=max_seconds)
    failed = fail_stalled_evaluations(session, started_before, error)
    if failed:
        log.warning("evaluation(s) %s: %s", failed, error)
    return failed


def sweep(session: Session, celery: Celery, settings: Settings, judge_leases: bool = True) -> None:
    """One pass; `judge_leases` False: leave expired leases alone this time."""
    if judge_leases:
        recover_lost_workers(session, celery)
    end_stalled_evaluations(session, settings.evaluation_max_seconds)
    # Before the re-send: a trial queued here is sent here, and counted as on its way.
    advance_running_sweeps(session, lambda job_id, queue: enqueue_training(celery, job_id, queue))
    resend_lost_messages(session, celery, grace_seconds=max(settings.sweep_seconds, 1.0))


class Sweeper:
    """Runs `sweep` every settings.sweep_seconds in a daemon thread of the API process."""

    def __init__(self, settings: Settings, celery: Celery):
        self.settings, self.celery = settings, celery
        self._sweeps = Periodic(self._sweep_once, settings.sweep_seconds, name="sweeper")
        self._outage = OutageNotice(log, "sweeps (skipped until it is back)")
        # While the database was unreachable no worker could renew its lease: once it is
        # back, each gets a lease's time to renew before any lease counts as lost, so a
        # database restart costs no job an attempt (nor the epoch it was training).
        self._judge_leases_from = 0.0  # time.monotonic()

    def start(self) -> None:
        if self.settings.sweep_seconds > 0:
            self._sweeps.start()

    def stop(self) -> None:
        self._sweeps.stop()

    def _sweep_once(self) -> None:
        # An outage is the service's state, not a bug: one line, and the next sweep tries
        # again. Anything else reaches Periodic, which logs it with its traceback.
        judge_leases = time.monotonic() >= self._judge_leases_from
        try:
            with get_session_factory()() as session:
                sweep(session, self.celery, self.settings, judge_leases)
        except DATABASE_UNREACHABLE as exc:
            self._outage.failed(exc)
            self._judge_leases_from = time.monotonic() + self.settings.lease_seconds
            return
        except BrokerUnreachable as exc:
            log.warning(
                "sweep skipped, retried in %g s: %s", self.settings.sweep_seconds, first_line(exc)
            )
            return
        self._outage.recovered()
