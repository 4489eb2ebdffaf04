"""Thin Celery tasks: take a job id, hand it to the runner."""

import logging

from kombu.exceptions import OperationalError as BrokerUnreachable

from app.broker import TRAIN_TASK, enqueue_training
from workers.celery_app import celery_app
from workers.runner import run_job

log = logging.getLogger("trainserve.worker")


@celery_app.task(name=TRAIN_TASK)
def train(job_id: str) -> None:
    run_job(job_id, send)


def send(job_id: str) -> None:
    """A sweep's next trial, queued by this worker, to the broker."""
    try:
        enqueue_training(celery_app, job_id)
    except BrokerUnreachable as exc:  # stored is queued: the sweeper sends it later
        log.warning("job %s: stored, but the broker is unreachable (%s)", job_id, exc)
