"""Every query the service runs, named for what it does."""

import base64
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.tables import Dataset, EpochMetrics, Job, ModelVersion, utcnow


class InvalidCursor(ValueError):
    pass


# ---- pagination (newest first, keyset on created_at then id) ----------------------------


def encode_cursor(row: Dataset | Job) -> str:
    return base64.urlsafe_b64encode(f"{row.created_at.isoformat()}|{row.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), row_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one this service returned") from exc


def _page(session: Session, table, limit: int, cursor: str | None, *filters):
    query = select(table).where(*filters)
    if cursor:
        created, row_id = _decode_cursor(cursor)
        query = query.where(
            (table.created_at < created) | ((table.created_at == created) & (table.id < row_id))
        )
    rows = session.scalars(
        query.order_by(table.created_at.desc(), table.id.desc()).limit(limit + 1)
    ).all()
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


# ---- datasets ----------------------------------------------------------------------------


def find_dataset_by_fingerprint(session: Session, fingerprint: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.fingerprint == fingerprint))


def add_dataset(session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.commit()
    return dataset


def get_dataset(session: Session, dataset_id: str) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def list_datasets(session: Session, limit: int, cursor: str | None):
    return _page(session, Dataset, limit, cursor)


# ---- jobs --------------------------------------------------------------------------------


def add_job(session: Session, job: Job) -> Job:
    session.add(job)
    session.commit()
    return job


def get_job(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(session: Session, limit: int, cursor: str | None):
    return _page(session, Job, limit, cursor)


def claim_job(session: Session, job_id: str, device: str) -> bool:
    """Move a queued job to running; False if it is not queued (already taken or ended)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="running", started_at=utcnow(), device=device)
    )
    session.commit()
    return result.rowcount == 1


def record_epoch(session: Session, job_id: str, metrics: dict, is_best: bool) -> None:
    session.add(EpochMetrics(job_id=job_id, **metrics))
    values = {"epoch": metrics["epoch"]}
    if is_best:
        values |= {"best_epoch": metrics["epoch"], "best_val_accuracy": metrics["val_accuracy"]}
    session.execute(update(Job).where(Job.id == job_id).values(**values))
    session.commit()


def finish_job(session: Session, job_id: str, model: ModelVersion) -> None:
    """Mark the job succeeded and register its model, in one transaction."""
    session.add(model)
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(status="succeeded", finished_at=utcnow(), checkpoint_path=model.checkpoint_path)
    )
    session.commit()


def fail_job(session: Session, job_id: str, error: str) -> None:
    session.rollback()
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(status="failed", finished_at=utcnow(), error=error)
    )
    session.commit()


# ---- models ------------------------------------------------------------------------------


def latest_model(session: Session, task: str) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion)
        .where(ModelVersion.task == task)
        .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        .limit(1)
    )


def find_model(session: Session, model_or_job_id: str) -> ModelVersion | None:
    """A model by its own id or by the id of the job that trained it."""
    return session.scalar(
        select(ModelVersion).where(
            (ModelVersion.id == model_or_job_id) | (ModelVersion.job_id == model_or_job_id)
        )
    )
