"""Jobs as submitted and read: store one, find one, list and count them."""

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.jobspec import JobSpec
from app.store.pages import page
from app.store.tables import ENDED, Job, JobEvent, JobStatus, is_id, new_id


def add_job(session: Session, spec: JobSpec, **fields) -> Job:
    """Store a queued job with its first event."""
    job = Job(
        id=new_id(),
        task=spec.task,
        dataset_id=spec.dataset_id,
        spec=spec.model_dump(mode="json"),
        epochs=spec.hyperparameters.epochs,
        max_attempts=spec.limits.max_attempts,
        event_seq=1,
        **fields,
    )
    session.add(job)
    session.add(JobEvent(job_id=job.id, seq=1, kind="status", data={"status": JobStatus.QUEUED}))
    session.commit()
    return job


def get_job(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id) if is_id(job_id) else None


def find_job_by_idempotency_key(session: Session, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.idempotency_key == key))


def list_jobs(
    session: Session,
    limit: int,
    cursor: str | None,
    statuses: list[str] | None = None,
    task: str | None = None,
):
    filters = []
    if statuses:
        filters.append(Job.status.in_(statuses))
    if task:
        filters.append(Job.task == task)
    return page(session, Job, limit, cursor, *filters)


def count_open_jobs(session: Session, api_key_id: str) -> int:
    """The key's jobs that have not ended (queued, running or cancelling)."""
    return session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.api_key_id == api_key_id, Job.status.notin_(ENDED))
    )


def count_jobs_by_status(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())


def count_queued(session: Session, queued_before: datetime) -> int:
    return session.scalar(
        select(func.count()).where(Job.status == JobStatus.QUEUED, Job.queued_at < queued_before)
    )


def queued_job_ids(session: Session, limit: int) -> list[str]:
    """Oldest queued first: a re-queued job goes before newer ones."""
    return list(
        session.scalars(
            select(Job.id)
            .where(Job.status == JobStatus.QUEUED)
            .order_by(Job.queued_at, Job.id)
            .limit(limit)
        )
    )
