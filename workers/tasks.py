"""Thin Celery tasks: take an id, hand it to the runner or the evaluator.

The runner and the evaluator (and with them torch) are imported in the pool's child, never
at module level: Celery's parent process imports this module to register the tasks, then
forks the pool's children, and a parent that had loaded torch could have initialised CUDA
before a fork (pytorch#40403). docs/operations.md: one worker per GPU.
"""

import logging

from kombu.exceptions import OperationalError as BrokerUnreachable

from app.broker import EVALUATE_TASK, QUEUE, TRAIN_TASK, enqueue_training
from workers.celery_app import celery_app

log = logging.getLogger("trainserve.worker")


@celery_app.task(name=TRAIN_TASK, bind=True)
def train(self, job_id: str) -> None:
    from workers.runner import run_job

    # The queue the message came from: the worker claims only that queue's jobs.
    queue = (self.request.delivery_info or {}).get("routing_key") or QUEUE
    run_job(job_id, send, queue=queue, worker=self.request.hostname)


@celery_app.task(name=EVALUATE_TASK)
def evaluate(evaluation_id: str) -> None:
    from workers.evaluation import run_evaluation

    run_evaluation(evaluation_id)


def send(job_id: str, queue: str) -> None:
    """A sweep's next trial, queued by this worker, to the broker."""
    try:
        enqueue_training(celery_app, job_id, queue)
    except BrokerUnreachable as exc:  # stored is queued: the sweeper sends it later
        log.warning("job %s: stored, but the broker is unreachable (%s)", job_id, exc)
