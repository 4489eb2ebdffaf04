"""Jobs queued straight through the persistence layer, for the worker's tests."""

import io
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from app.ingest import ingest_upload
from app.jobspec import JobSpec
from app.recipes import facts_of_dataset, resolve
from app.store.artefacts import get_store
from app.store.jobs import add_job, get_job
from app.store.tables import Job, utcnow
from models.data import NamedFile, ReadOptions


def queue_job(session, settings, upload: bytes, filename: str, **spec_fields) -> str:
    files = [NamedFile(filename, io.BytesIO(upload))]
    dataset, _ = ingest_upload(session, settings, files, None, ReadOptions())
    spec = JobSpec.model_validate({"dataset_id": dataset.id, **spec_fields})
    resolved = resolve(spec, facts_of_dataset(dataset, spec.validation))
    return add_job(session, resolved.spec, resolved.sources, resolved.planned_epochs).id


def queue_image_job(session, settings, zip_bytes: bytes, **spec_fields) -> str:
    return queue_job(
        session,
        settings,
        zip_bytes,
        "d.zip",
        task="image_classification",
        model={"arch": "tutorial_cnn"},
        **spec_fields,
    )


def queue_text_job(session, settings, csv_bytes: bytes, **spec_fields) -> str:
    return queue_job(
        session,
        settings,
        csv_bytes,
        "t.csv",
        task="text_sentiment",
        model={"arch": "bag_of_embeddings"},
        **spec_fields,
    )


def expire_lease(session, job_id: str) -> None:
    """Its lease ran out a second ago, as if its worker had stopped sending heartbeats."""
    expired = utcnow() - timedelta(seconds=1)
    session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=expired))
    session.commit()


def reloaded(session, job_id: str) -> Job:
    """The job as the database holds it now."""
    session.expire_all()
    job = get_job(session, job_id)
    assert job is not None, f"no job {job_id}"
    return job


def checkpoint_file(model) -> Path:
    """A local file of a model version's checkpoint, read through the artefact store."""
    return get_store().read(model.checkpoint_path, model.sha256)


def stored_file(settings, key: str) -> Path:
    """Where the local artefact folder keeps the object of `key`."""
    return settings.artifacts_dir.resolve() / key
