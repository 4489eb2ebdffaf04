"""Uploaded datasets: one stored copy per upload and read options."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.pages import page
from app.store.tables import Dataset, is_id


def find_dataset_by_fingerprint(session: Session, fingerprint: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.fingerprint == fingerprint))


def add_dataset(session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.commit()
    return dataset


def get_dataset(session: Session, dataset_id: str) -> Dataset | None:
    return session.get(Dataset, dataset_id) if is_id(dataset_id) else None


def set_owner(session: Session, dataset: Dataset, owner_key_id: str | None) -> None:
    dataset.owner_key_id = owner_key_id
    session.commit()


def list_datasets(session: Session, limit: int, cursor: str | None, *filters):
    return page(session, Dataset, limit, cursor, *filters)
