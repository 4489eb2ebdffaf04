"""What a key keeps in the artefact store: its datasets and its jobs' checkpoints."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.artefacts import ArtefactStore
from app.store.tables import Dataset, Job


def job_prefix(job_id: str) -> str:
    """The keys of a job's checkpoints start with this."""
    return f"jobs/{job_id}/"


def bytes_stored_by(session: Session, api_key_id: str, store: ArtefactStore) -> int:
    """The bytes stored of the key's datasets and of its jobs' checkpoints, as they are now
    (a running job's grow with each checkpoint)."""
    dataset_keys = session.scalars(
        select(Dataset.path).where(Dataset.owner_key_id == api_key_id, Dataset.deleted_at.is_(None))
    )
    job_ids = session.scalars(select(Job.id).where(Job.api_key_id == api_key_id))
    return sum(store.size(key) for key in dataset_keys) + sum(
        store.size_under(job_prefix(job_id)) for job_id in job_ids
    )
