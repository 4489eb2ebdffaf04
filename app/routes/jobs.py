import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from kombu.exceptions import OperationalError
from sqlalchemy.orm import Session

from app import repository
from app.deps import CeleryDep, SessionDep
from app.queue import enqueue_training
from app.schemas import JobCreate, JobPublic, JobsPublic
from app.tables import Dataset, Job

router = APIRouter(prefix="/jobs", tags=["jobs"])
log = logging.getLogger("trainserve.api")


@router.post(
    "",
    status_code=201,
    responses={
        422: {"description": "A field of the spec is invalid; the detail names it."},
        503: {"description": "The broker cannot be reached."},
    },
)
def create_job(*, session: SessionDep, celery: CeleryDep, spec: JobCreate) -> JobPublic:
    """Store a training job and queue it for a worker."""
    dataset = _dataset_for(session, spec.dataset_id, spec.task, "dataset_id")
    if spec.validation.dataset_id:
        held_out = _dataset_for(
            session, spec.validation.dataset_id, spec.task, "validation.dataset_id"
        )
        if held_out.classes != dataset.classes:
            raise HTTPException(
                422,
                f"validation.dataset_id has classes {held_out.classes}, "
                f"the training dataset {dataset.classes}",
            )
    job = repository.add_job(
        session,
        Job(
            task=spec.task,
            dataset_id=dataset.id,
            spec=spec.model_dump(mode="json"),
            epochs=spec.hyperparameters.epochs,
        ),
    )
    try:
        enqueue_training(celery, job.id)
    except OperationalError as exc:
        repository.fail_job(session, job.id, f"could not reach the broker: {exc}")
        raise HTTPException(503, "the job queue (broker) cannot be reached; try again") from exc
    log.info("job %s: queued %s %s", job.id, spec.task, spec.model.arch)
    return JobPublic.from_job(job)


def _dataset_for(session: Session, dataset_id: str, task: str, field: str) -> Dataset:
    dataset = repository.get_dataset(session, dataset_id)
    if dataset is None:
        raise HTTPException(422, f"{field} {dataset_id!r} is not a known dataset")
    if dataset.task != task:
        raise HTTPException(
            422, f"{field} {dataset_id!r} holds {dataset.task} data, but the job's task is {task}"
        )
    return dataset


@router.get("")
def list_jobs(
    *,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> JobsPublic:
    """Jobs, newest first."""
    items, next_cursor = repository.list_jobs(session, limit, cursor)
    return JobsPublic(items=[JobPublic.from_job(job) for job in items], next_cursor=next_cursor)


@router.get("/{job_id}", responses={404: {"description": "No such job."}})
def get_job(*, session: SessionDep, job_id: str) -> JobPublic:
    """Status, per-epoch history, best epoch, timings and any error."""
    job = repository.get_job(session, job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id!r}")
    return JobPublic.from_job(job)
