"""What a key keeps on disk: its datasets' files and its jobs' checkpoint folders."""

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.tables import Dataset, Job


def job_folder(artifacts_dir: Path, job_id: str) -> Path:
    """Where a job's checkpoints live: last.pt (to resume) and best.pt (its model)."""
    return artifacts_dir / "jobs" / job_id


def bytes_stored_by(session: Session, api_key_id: str, artifacts_dir: Path) -> int:
    """The bytes on disk of the key's datasets and of its jobs' folders, as they are now
    (a running job's grow with each checkpoint)."""
    dataset_files = session.scalars(
        select(Dataset.path).where(Dataset.owner_key_id == api_key_id, Dataset.deleted_at.is_(None))
    )
    job_ids = session.scalars(select(Job.id).where(Job.api_key_id == api_key_id))
    files = [Path(path) for path in dataset_files]
    for job_id in job_ids:
        folder = job_folder(artifacts_dir, job_id)
        files += folder.iterdir() if folder.is_dir() else []
    return sum(_size(file) for file in files)


def _size(file: Path) -> int:
    try:
        return file.stat().st_size
    except FileNotFoundError:  # removed meanwhile (a delete, a checkpoint replaced)
        return 0
