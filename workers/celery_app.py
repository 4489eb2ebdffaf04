"""The worker's Celery instance: `celery -A workers.celery_app worker`.

The parent process (Celery's main process, which forks the prefork pool's children)
imports neither torch nor the runner: CUDA must not be initialised in a process that
forks afterwards (pytorch#40403). It only reports the worker in the workers table (its
GPUs through nvidia-smi); each child imports torch when it starts.
"""

import os

from celery.signals import worker_process_init, worker_ready, worker_shutting_down

from app.broker import make_celery
from app.config import get_settings
from app.logs import configure_logging
from app.store.db import get_engine
from workers.lease import worker_stopping
from workers.registry import WorkerRegistry

celery_app = make_celery(get_settings())
celery_app.conf.include = ["workers.tasks"]
_registry: list[WorkerRegistry] = []  # the parent's, once the worker is ready


@worker_process_init.connect
def _configure_process(**_) -> None:
    import torch  # in the child, after the fork: see the module's docstring

    configure_logging()
    # The parent's pooled connections are the parent's: the child opens its own (SQLAlchemy's
    # advice for a fork; close=False leaves the parent's sockets alone).
    get_engine().dispose(close=False)
    torch.set_num_threads(get_settings().torch_threads or os.cpu_count() or 1)


@worker_ready.connect
def _report_worker(sender, **_) -> None:
    queues = sorted(sender.app.amqp.queues.consume_from)
    registry = WorkerRegistry(sender.hostname, queues, get_settings())
    registry.start()
    _registry.append(registry)


@worker_shutting_down.connect
def _hand_back_jobs(**_) -> None:
    # A warm shutdown waits for running tasks, and a training job may take hours: a
    # child instead hands its job back to the queue at its next step, then the task ends.
    worker_stopping.set()
    for registry in _registry:
        registry.stop()
