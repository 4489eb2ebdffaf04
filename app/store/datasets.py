"""Uploaded datasets: one stored copy per upload and read options."""

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.store.pages import page
from app.store.tables import ENDED, Dataset, Job, is_id, utcnow

LIVE = Dataset.deleted_at.is_(None)


class DatasetInUse(Exception):
    """A dataset that jobs not yet ended train or validate on cannot be deleted."""

    def __init__(self, dataset_id: str, job_ids: list[str]):
        super().__init__(
            f"dataset {dataset_id} is used by jobs that have not ended: {', '.join(job_ids)}; "
            "cancel them or wait for them to end"
        )


def find_dataset_by_fingerprint(session: Session, fingerprint: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.fingerprint == fingerprint))


def add_dataset(session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.commit()
    return dataset


def get_dataset(session: Session, dataset_id: str) -> Dataset | None:
    """A dataset that has not been deleted."""
    dataset = session.get(Dataset, dataset_id) if is_id(dataset_id) else None
    return dataset if dataset is not None and dataset.deleted_at is None else None


def list_datasets(session: Session, limit: int, cursor: str | None, *filters):
    return page(session, Dataset, limit, cursor, LIVE, *filters)


def delete_dataset(session: Session, dataset_id: str) -> str | None:
    """Delete a dataset, and return its artefact's key for the caller to remove once this has
    committed (None: no such dataset). Raises DatasetInUse while a job not yet ended names
    it. One that ended jobs name stays as a tombstone, so that their rows keep what they
    ran on; its fingerprint is freed, so the same upload stores a new dataset."""
    dataset = session.get(Dataset, dataset_id, with_for_update=True) if is_id(dataset_id) else None
    if dataset is None or dataset.deleted_at is not None:
        return None
    users = session.execute(select(Job.id, Job.status).where(_names_dataset(dataset_id))).all()
    running = [job_id for job_id, status in users if status not in ENDED]
    if running:
        session.rollback()
        raise DatasetInUse(dataset_id, running)
    if users:
        dataset.deleted_at = utcnow()
        dataset.fingerprint = f"deleted:{dataset.id}"
    else:
        session.delete(dataset)
    session.commit()
    return dataset.path


def drop_unnamed_tombstones(session: Session, dataset_ids: list[str]) -> None:
    """Stage the removal of these datasets' tombstones that no job names any more (their
    last job was deleted); the caller commits."""
    for dataset_id in dataset_ids:
        dataset = session.get(Dataset, dataset_id)
        named = session.scalar(select(Job.id).where(_names_dataset(dataset_id)).limit(1))
        if dataset is not None and dataset.deleted_at is not None and named is None:
            session.delete(dataset)


def _names_dataset(dataset_id: str):
    """Jobs that train on the dataset or validate on it."""
    return or_(
        Job.dataset_id == dataset_id,
        Job.spec[("validation", "dataset_id")].as_string() == dataset_id,
    )
