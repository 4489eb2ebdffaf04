"""Thin Celery tasks: take a job id, hand it to the runner."""

from app.broker import TRAIN_TASK
from workers.celery_app import celery_app
from workers.runner import run_job


@celery_app.task(name=TRAIN_TASK)
def train(job_id: str) -> None:
    run_job(job_id, celery_app)
