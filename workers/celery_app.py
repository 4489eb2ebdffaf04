"""The worker's Celery instance: `celery -A workers.celery_app worker`."""

import logging
import os

import torch
from celery.signals import worker_process_init

from app.config import get_settings
from app.queue import make_celery

celery_app = make_celery(get_settings())
celery_app.conf.include = ["workers.tasks"]


@worker_process_init.connect
def _configure_process(**_) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    torch.set_num_threads(get_settings().torch_threads or os.cpu_count() or 1)
