"""The Celery app as both processes configure it. The broker carries job ids only."""

from celery import Celery

from app.config import Settings

TRAIN_TASK = "trainserve.train"
EVALUATE_TASK = "trainserve.evaluate"
QUEUE = "trainserve"  # CPU jobs; a worker started without -Q serves it
GPU_QUEUE = "trainserve.cuda"  # `celery … worker -Q trainserve.cuda`, one worker per GPU
QUEUE_OF_DEVICE = {"cpu": QUEUE, "cuda": GPU_QUEUE}


def make_celery(settings: Settings) -> Celery:
    celery = Celery("trainserve", broker=settings.broker_url)
    celery.conf.update(
        task_default_queue=QUEUE,
        task_ignore_result=True,  # job state lives in the database, not a result backend
        # Acknowledged when the task returns, not when it starts. That helps only if the
        # whole worker dies first: Redis then redelivers after the visibility timeout. A
        # pool child that dies (killed, or os._exit after an unheeded cancel) has its message
        # acknowledged anyway (task_reject_on_worker_lost is off), and the filesystem broker
        # deletes a message as it reads it. So a message only wakes a worker: the job's lease
        # and the API's sweeper (re-queue, re-send) are what make every job run.
        task_acks_late=True,
        worker_prefetch_multiplier=1,  # a worker reserves one long job at a time
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlives any broker outage
        # A running job is the lease's business: a broker outage must not stop it.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_transport_options=_transport_options(settings),
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        worker_hijack_root_logger=False,
    )
    return celery


def _transport_options(settings: Settings) -> dict:
    if not settings.broker_url.startswith("filesystem"):
        # A redelivered message is harmless (it only wakes a worker); a long timeout
        # just avoids needless redeliveries while a long job runs.
        return {"visibility_timeout": 24 * 3600}
    # Embedded broker: messages are files in one folder shared by the API and the worker.
    folder = settings.broker_dir.resolve()
    for subfolder in ("processed", "control"):
        (folder / subfolder).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),  # else kombu writes control/ in the cwd
        "store_processed": False,
        "polling_interval": 0.1,  # seconds between looks at the folder; kombu's default is 1
    }


def enqueue_training(celery: Celery, job_id: str, queue: str = QUEUE) -> None:
    celery.send_task(TRAIN_TASK, args=[job_id], queue=queue, retry=True)


def enqueue_evaluation(celery: Celery, evaluation_id: str) -> None:
    celery.send_task(EVALUATE_TASK, args=[evaluation_id], queue=QUEUE, retry=True)


def queue_length(celery: Celery, queue: str = QUEUE) -> int:
    """Messages waiting in the broker's `queue` (not those a worker holds)."""
    with celery.connection_for_write() as connection:
        return connection.default_channel.queue_declare(queue=queue).message_count
