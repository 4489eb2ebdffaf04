"""Thin Celery tasks: take a job id, hand it to the runner.

The runner (and with it torch) is imported in the pool's child, never at module level:
Celery's parent process imports this module to register the task, then forks the pool's
children, and a parent that had loaded torch could have initialised CUDA before a fork
(pytorch#40403). docs/operations.md: one worker per GPU.
"""

from app.broker import QUEUE, TRAIN_TASK
from workers.celery_app import celery_app


@celery_app.task(name=TRAIN_TASK, bind=True)
def train(self, job_id: str) -> None:
    from workers.runner import run_job

    # The queue the message came from: the worker claims only that queue's jobs.
    queue = (self.request.delivery_info or {}).get("routing_key") or QUEUE
    run_job(job_id, queue=queue, worker=self.request.hostname)
