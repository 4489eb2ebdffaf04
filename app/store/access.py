"""Who may read what: datasets and model names belong to a key (their owner) and to the
keys they are shared with; jobs to the key that made them. An admin key, or no key at all
(authentication off), reads everything."""

from typing import Any, Literal

from sqlalchemy import ColumnElement, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.store.tables import (
    ApiKey,
    Dataset,
    DatasetShare,
    Job,
    ModelName,
    ModelShare,
    ModelVersion,
)
from app.store.versions import count_registry_change

ShareKind = Literal["dataset", "model"]
# Each kind's share table and its column naming what is shared (Any: the two tables have
# the same columns, key_id and created_at, but no common class to say so).
SHARES: dict[str, tuple[Any, Any]] = {
    "dataset": (DatasetShare, DatasetShare.dataset_id),
    "model": (ModelShare, ModelShare.name),
}


def sees_all(key: ApiKey | None) -> bool:
    return key is None or key.scope == "admin"


def restricted_to(key: ApiKey | None) -> str | None:
    """The key id whose own and shared things a request may read; None: everything."""
    return None if key is None or sees_all(key) else key.id


def owns(key: ApiKey | None, owner_key_id: str | None) -> bool:
    """Whether the key may manage a thing with this owner (share it): its owner, or admin."""
    return sees_all(key) or (key is not None and key.id == owner_key_id)


# ---- datasets ----------------------------------------------------------------------------


def readable_datasets(key: ApiKey | None) -> ColumnElement[bool]:
    """The filter of the datasets the key may read."""
    if key is None or sees_all(key):
        return true()
    shared = select(DatasetShare.dataset_id).where(DatasetShare.key_id == key.id)
    return or_(Dataset.owner_key_id == key.id, Dataset.id.in_(shared))


def may_read_dataset(session: Session, dataset: Dataset, key: ApiKey | None) -> bool:
    if key is None or owns(key, dataset.owner_key_id):
        return True
    return session.get(DatasetShare, (dataset.id, key.id)) is not None


# ---- jobs --------------------------------------------------------------------------------


def owns_job(key: ApiKey | None, job: Job) -> bool:
    return owns(key, job.api_key_id)


# ---- model names -------------------------------------------------------------------------


class NameTaken(Exception):
    """The model name belongs to another key."""


def claim_name(session: Session, name: str, key: ApiKey | None) -> None:
    """Make the name the key's if it is nobody's yet; NameTaken if it is another key's. A
    name two keys claim at once goes to one of them."""
    for _ in range(3):  # store the name if nobody has it, then read whose it is
        owner = session.get(ModelName, name)
        if owner is not None:
            if not owns(key, owner.owner_key_id):
                raise NameTaken(f"model name {name!r} belongs to another key: name the job")
            return
        # A name whose versions were trained without the API (with no key) stays admin's.
        owner_key_id = None if key is None or name_exists(session, name) else key.id
        session.add(ModelName(name=name, owner_key_id=owner_key_id))
        try:
            session.commit()
        except IntegrityError:  # another request stored it meanwhile
            session.rollback()
    raise NameTaken(f"model name {name!r} is being claimed by another request: try again")


def name_owner(session: Session, name: str) -> str | None:
    """The key id a name belongs to (None: admin's, or nobody's yet)."""
    return session.scalar(select(ModelName.owner_key_id).where(ModelName.name == name))


def name_exists(session: Session, name: str) -> bool:
    """Whether a job claimed the name or a version bears it (one trained with no key)."""
    if session.get(ModelName, name) is not None:
        return True
    version = select(ModelVersion.id).where(ModelVersion.name == name).limit(1)
    return session.scalar(version) is not None


def readable_names(key: ApiKey | None) -> ColumnElement[bool]:
    """The filter of the model versions whose name the key may read."""
    if key is None or sees_all(key):
        return true()
    owned = select(ModelName.name).where(ModelName.owner_key_id == key.id)
    shared = select(ModelShare.name).where(ModelShare.key_id == key.id)
    return or_(ModelVersion.name.in_(owned), ModelVersion.name.in_(shared))


def may_read_name(session: Session, name: str, key: ApiKey | None) -> bool:
    if sees_all(key) or key is None:
        return True
    if name_owner(session, name) == key.id:
        return True
    return session.get(ModelShare, (name, key.id)) is not None


def name_readers(session: Session) -> dict[str, frozenset[str]]:
    """Name -> the ids of the keys, not admin, that may read it: its owner and its shares."""
    readers: dict[str, set[str]] = {}
    for name, owner in session.execute(select(ModelName.name, ModelName.owner_key_id)):
        readers[name] = {owner} if owner else set()
    for name, key_id in session.execute(select(ModelShare.name, ModelShare.key_id)):
        readers.setdefault(name, set()).add(key_id)
    return {name: frozenset(keys) for name, keys in readers.items()}


# ---- shares ------------------------------------------------------------------------------


def shares_of(session: Session, kind: ShareKind, target: str) -> list[DatasetShare | ModelShare]:
    table, column = SHARES[kind]
    return list(session.scalars(select(table).where(column == target).order_by(table.created_at)))


def share(session: Session, kind: ShareKind, target: str, key_id: str) -> None:
    """Share with the key (again, harmlessly). A model's readers are part of the registry:
    every API process reads them again, as after an alias's move."""
    table, column = SHARES[kind]
    if kind == "model" and session.get(ModelName, target) is None:  # versions of no key's
        session.add(ModelName(name=target, owner_key_id=None))
    if session.scalar(select(table).where(column == target, table.key_id == key_id)) is None:
        session.add(table(**{column.key: target, "key_id": key_id}))
        _registry_change_for(session, kind)
    session.commit()


def unshare(session: Session, kind: ShareKind, target: str, key_id: str) -> bool:
    """Whether there was such a share to remove."""
    table, column = SHARES[kind]
    found = session.scalar(select(table).where(column == target, table.key_id == key_id))
    if found is None:
        return False
    session.delete(found)
    _registry_change_for(session, kind)
    session.commit()
    return True


def _registry_change_for(session: Session, kind: ShareKind) -> None:
    if kind == "model":
        count_registry_change(session)
