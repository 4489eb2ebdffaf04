"""The worker's Celery instance: `celery -A workers.celery_app worker`."""

import os

import torch
from celery.signals import worker_process_init, worker_shutting_down

from app.broker import make_celery
from app.config import get_settings
from app.logs import configure_logging
from workers.lease import worker_stopping

celery_app = make_celery(get_settings())
celery_app.conf.include = ["workers.tasks"]


@worker_process_init.connect
def _configure_process(**_) -> None:
    configure_logging()
    torch.set_num_threads(get_settings().torch_threads or os.cpu_count() or 1)


@worker_shutting_down.connect
def _hand_back_jobs(**_) -> None:
    # A warm shutdown waits for running tasks, and a training job may take hours: a
    # child instead hands its job back to the queue at its next step, then the task ends.
    worker_stopping.set()
