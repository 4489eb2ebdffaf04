"""Thin Celery tasks: take an id, hand it to the runner or the evaluator."""

from app.broker import EVALUATE_TASK, TRAIN_TASK
from workers.celery_app import celery_app
from workers.evaluation import run_evaluation
from workers.runner import run_job


@celery_app.task(name=TRAIN_TASK)
def train(job_id: str) -> None:
    run_job(job_id)


@celery_app.task(name=EVALUATE_TASK)
def evaluate(evaluation_id: str) -> None:
    run_evaluation(evaluation_id)
