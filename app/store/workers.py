"""The workers as they report themselves: their queues, device and GPUs, their heartbeat."""

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.store.tables import LEASED, Job, Worker, utcnow


def report_worker(session: Session, name: str, queues: list[str], device: str, gpus: list) -> None:
    """Insert or renew the worker's row: it is alive now."""
    worker = session.get(Worker, name)
    if worker is None:
        session.add(Worker(name=name, queues=queues, device=device, gpus=gpus))
    else:
        worker.queues, worker.device, worker.gpus = queues, device, gpus
        worker.heartbeat_at = utcnow()
    session.commit()


def forget_worker(session: Session, name: str) -> None:
    """A worker that stops takes its row with it."""
    session.execute(delete(Worker).where(Worker.name == name))
    session.commit()


def list_workers(session: Session) -> list[tuple[Worker, str | None]]:
    """Every worker, the most recently heard first, with the job it runs (or None)."""
    workers = session.scalars(select(Worker).order_by(Worker.heartbeat_at.desc()))
    running = dict(session.execute(select(Job.worker, Job.id).where(Job.status.in_(LEASED))).all())
    return [(worker, running.get(worker.name)) for worker in workers]


def queue_last_seen(session: Session, queue: str) -> datetime | None:
    """When a worker serving `queue` last sent a heartbeat (None: never, or it stopped)."""
    beats = [w.heartbeat_at for w in session.scalars(select(Worker)) if queue in w.queues]
    return max(beats, default=None)


def queue_served(session: Session, queue: str, within_seconds: float) -> bool:
    seen = queue_last_seen(session, queue)
    return seen is not None and seen > utcnow() - timedelta(seconds=within_seconds)


def why_waiting(session: Session, queue: str, within_seconds: float) -> str | None:
    """Why a queued job of `queue` has no worker (None: one was seen lately)."""
    if queue_served(session, queue, within_seconds):
        return None
    return f"no worker for queue {queue} seen in the last {within_seconds:g} s"
