import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.broker import GPU_QUEUE, QUEUE_OF_DEVICE, enqueue_training
from app.config import Settings, get_settings
from app.deps import (
    CeleryDep,
    CurrentKeyDep,
    ModelServerDep,
    SessionDep,
    SettingsDep,
    key_of,
    require_scope,
)
from app.jobspec import AUTO, JobSpec, needed_device
from app.quotas import apply_ceilings, check_job_quota, check_storage_quota
from app.recipes import DataFacts, Resolved, facts_of_dataset, resolve
from app.routes.models import forget_version
from app.schemas import (
    JobListQuery,
    JobPublic,
    JobsPublic,
    JobsSeries,
    JobSummary,
    JobTimeline,
    MetricName,
    MetricSeries,
    Responses,
    SeriesQuery,
    StatusChange,
    error,
)
from app.store import access, datasets, jobs, lifecycle, records, workers
from app.store.artefacts import get_store
from app.store.db import get_session_factory, read_only_connection
from app.store.storage import job_prefix
from app.store.tables import ENDED, ApiKey, Dataset, Job, JobEvent, JobStatus
from app.streams import StreamOver

router = APIRouter(prefix="/jobs", tags=["jobs"])
log = logging.getLogger("trainserve.api")

NOT_FOUND: Responses = {404: error("No such job.")}


@router.post(
    "",
    status_code=201,
    responses={
        200: {"model": JobPublic, "description": "This Idempotency-Key's job, already stored."},
        409: error(
            "The Idempotency-Key was used with another body, or the key's storage quota is used up."
        ),
        403: error("A dataset, or the model name, is another key's."),
        422: error("A field of the spec is invalid or over a ceiling; the detail names it."),
    },
)
def create_job(
    *,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    key: CurrentKeyDep,
    spec: JobSpec,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="Retrying with the same key and body returns the same job.",
        ),
    ] = None,
) -> JobPublic:
    """Store a training job and queue it for a worker. Its datasets must be the key's or
    shared with it, and its model name the key's or nobody's yet (it becomes the key's)."""
    request_sha256 = hashlib.sha256(
        json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()
    if idempotency_key and key:  # each API key has its own: two clients may pick the same
        idempotency_key = f"{key.id}:{idempotency_key}"
    if idempotency_key and (job := _job_for_key(session, idempotency_key, request_sha256)):
        response.status_code = 200
        return JobPublic.from_job(job)
    facts = facts_of_dataset(check_datasets(session, spec, key), spec.validation)
    resolved = resolved_or_422(spec, facts)
    apply_ceilings(resolved, facts, settings)
    # A job's checkpoints take room not known yet: it needs the quota not used up.
    check_storage_quota(session, key, settings, adding=1, refusal=(409, "a new job"))
    claim_name(session, spec, key)
    check_job_quota(session, key, settings)
    spec_routed, sources = _routed(session, settings, resolved.spec, resolved.sources)
    try:
        job = jobs.add_job(
            session,
            spec_routed,
            sources,
            resolved.planned_epochs,
            queue=QUEUE_OF_DEVICE[spec_routed.resources.device],
            idempotency_key=idempotency_key,
            request_sha256=request_sha256,
            api_key_id=key.id if key else None,
        )
    except IntegrityError:  # the same key, sent twice at once: the other request stored it
        session.rollback()
        stored = _job_for_key(session, idempotency_key, request_sha256) if idempotency_key else None
        if stored is None:  # the conflict was not on the idempotency key: a real error
            raise
        response.status_code = 200
        return JobPublic.from_job(stored)
    _send(celery, job)
    return JobPublic.from_job(job)


def _job_for_key(session: Session, key: str, request_sha256: str) -> Job | None:
    job = jobs.find_job_by_idempotency_key(session, key)
    if job is not None and job.request_sha256 != request_sha256:
        raise HTTPException(
            409, f"this Idempotency-Key was used for job {job.id} with another body"
        )
    return job


def _routed(
    session: Session, settings: Settings, spec: JobSpec, sources: dict[str, str]
) -> tuple[JobSpec, dict[str, str]]:
    """The spec with the device that routes it: as asked, or for `auto` cuda if a GPU
    worker was seen lately, else cpu; the sources say which and why."""
    device = needed_device(spec)
    if device == AUTO:
        within = settings.worker_seen_seconds
        seen = workers.queue_served(session, GPU_QUEUE, within)
        device = "cuda" if seen else "cpu"
        why = "a GPU worker was seen" if seen else "no GPU worker was seen"
        sources = sources | {"resources.device": f"workers: {why} in the last {within:g} s"}
    else:
        sources = sources | {"resources.device": "given"}
    resources = spec.resources.model_copy(update={"device": device})
    return spec.model_copy(update={"resources": resources}), sources


def _send(celery, job: Job) -> None:
    try:
        enqueue_training(celery, job.id, job.queue)
    except OperationalError as exc:
        # Stored is accepted: the sweeper sends it once the broker is back.
        log.warning("job %s: stored, but the broker is unreachable (%s)", job.id, exc)
        return
    log.info("job %s: queued %s %s", job.id, job.task, job.spec["model"]["arch"])


def claim_name(session: Session, spec: JobSpec, key: ApiKey | None) -> None:
    """The job's model name becomes the key's, unless it is another key's (403): a train key
    must not add versions, and so a `latest`, to another team's model."""
    try:
        access.claim_name(session, spec.name or spec.task, key)
    except access.NameTaken as exc:
        raise HTTPException(403, str(exc)) from exc


def check_datasets(session: Session, spec: JobSpec, key: ApiKey | None) -> Dataset:
    """The training dataset, once it and any validation dataset fit the spec and the key
    may read them."""
    dataset = _dataset_for(session, spec.dataset_id, spec.task, "dataset_id", key)
    train, test = (dataset.counts.get(split, {}).values() for split in ("train", "test"))
    if problem := spec.validation.problem(list(train), sum(test)):
        raise HTTPException(422, problem)
    if spec.validation.dataset_id:
        held_out = _dataset_for(
            session, spec.validation.dataset_id, spec.task, "validation.dataset_id", key
        )
        if held_out.classes != dataset.classes:
            raise HTTPException(
                422,
                f"validation.dataset_id has classes {held_out.classes}, "
                f"the training dataset {dataset.classes}",
            )
    return dataset


def resolved_or_422(spec: JobSpec, facts: DataFacts) -> Resolved:
    """The spec with what it left out filled from the network's recipe and the data; 422
    when a value given and one filled do not fit together."""
    try:
        return resolve(spec, facts)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors()
        )
        raise HTTPException(
            422, f"with its defaults filled, the spec is invalid: {problems}"
        ) from exc


def _dataset_for(
    session: Session, dataset_id: str, task: str, field: str, key: ApiKey | None
) -> Dataset:
    dataset = datasets.get_dataset(session, dataset_id)
    if dataset is None:
        raise HTTPException(422, f"{field} {dataset_id!r} is not a known dataset")
    if not access.may_read_dataset(session, dataset, key):
        # Training on it would let the key read the data back: a text network's checkpoint
        # holds the vocabulary it was trained on.
        raise HTTPException(
            403, f"{field} {dataset_id!r} is another key's dataset, not shared with this key"
        )
    if dataset.task != task:
        raise HTTPException(
            422, f"{field} {dataset_id!r} holds {dataset.task} data, but the job's task is {task}"
        )
    return dataset


# The routes dashboards and CLIs poll (GET /jobs, /jobs/{id}, and /series for the runs
# page's sparklines) are answered past FastAPI's router
# (app.past_router), which runs the key check they declare themselves: their router is
# included without app.main's. They cross to the thread pool once, to read: async, with
# no SessionDep. (SessionDep's set-up and clean-up are a hop each, and FastAPI checks the
# answer of a plain def route against its response model in one more.) They answer their
# model's JSON, made in that thread: FastAPI would validate the model it was handed once
# more and serialise it on the event loop. response_model keeps the OpenAPI schema.
polled_router = APIRouter(tags=["jobs"], dependencies=[require_scope("train")])


def _json(model: BaseModel) -> Response:
    """What FastAPI answers for a response model, already serialised."""
    return Response(model.model_dump_json(), media_type="application/json")


@polled_router.get("/jobs", response_model=JobsPublic)
async def list_jobs(*, request: Request, query: Annotated[JobListQuery, Query()]) -> Response:
    """The key's jobs (every job, for admin), newest first, filtered before they are
    paged: each one's summary (GET /jobs/{id} has its spec and per-epoch history)."""
    return await run_in_threadpool(_job_page, query, access.restricted_to(key_of(request)))


def _job_page(query: JobListQuery, owner: str | None) -> Response:
    with read_only_connection() as connection:
        rows, next_cursor = jobs.list_job_summaries(
            connection, query.limit, query.cursor, query.status, query.task, query.name, owner
        )
    return _json(JobsPublic(items=[JobSummary.of(row) for row in rows], next_cursor=next_cursor))


def _no_such_job(job_id: str) -> HTTPException:
    return HTTPException(404, f"no job with id {job_id!r}")


def _existing_job(session: Session, job_id: str, key: ApiKey | None) -> Job:
    """The job if it is the key's (any, for admin); another key's is answered as unknown."""
    job = jobs.get_job(session, job_id)
    if job is None or not access.owns_job(key, job):
        raise _no_such_job(job_id)
    return job


def existing_job(session: SessionDep, key: CurrentKeyDep, job_id: str) -> Job:
    return _existing_job(session, job_id, key)


ExistingJobDep = Annotated[Job, Depends(existing_job)]


# Not under /jobs/, where /jobs/{job_id} would take "series" for a job id.
@polled_router.get("/series", response_model=JobsSeries)
async def jobs_series(*, request: Request, query: Annotated[SeriesQuery, Query()]) -> Response:
    """One metric of several jobs in one request, each bucketed as GET /jobs/{id}/metrics
    buckets it (the runs page's sparklines: one request for a page of jobs, not one each).
    Jobs the key may not read, or that do not exist, are left out."""
    return await run_in_threadpool(_series_of_jobs, query, access.restricted_to(key_of(request)))


def _series_of_jobs(query: SeriesQuery, owner: str | None) -> Response:
    name, max_points = query.name, query.max_points
    with get_session_factory()() as session:
        readable = jobs.readable_job_ids(session, query.job_id, owner)
        items = [
            MetricSeries.of(job_id, name, records.metric_series(session, job_id, name, max_points))
            for job_id in dict.fromkeys(query.job_id)  # each once, in the order asked
            if job_id in readable
        ]
    return _json(JobsSeries(name=query.name, items=items))


@polled_router.get("/jobs/{job_id}", response_model=JobPublic, responses=NOT_FOUND)
async def get_job(*, request: Request, job_id: str) -> Response:
    """Status, attempts, spec, per-epoch history, best epoch, timings and any error."""
    return await run_in_threadpool(_job_view, job_id, access.restricted_to(key_of(request)))


def _job_view(job_id: str, owner: str | None) -> Response:
    with read_only_connection() as connection:
        found = jobs.read_job(connection, job_id, owner)
    if found is None:
        raise _no_such_job(job_id)
    job = JobPublic.from_rows(*found)
    if job.status == JobStatus.QUEUED:
        job.waiting = _why_waiting(job.queue)
    return _json(job)


def _why_waiting(queue: str) -> str | None:
    """Read only for a queued job, in a session of its own: polls of running jobs (the
    many) stay one statement."""
    with get_session_factory()() as session:
        return workers.why_waiting(session, queue, get_settings().worker_seen_seconds)


@router.post(
    "/{job_id}/cancel",
    responses={
        **NOT_FOUND,
        202: {"model": JobPublic, "description": "Running: asked to stop (status cancelling)."},
        409: error("The job already succeeded or failed."),
    },
)
def cancel_job(*, session: SessionDep, job: ExistingJobDep, response: Response) -> JobPublic:
    """Cancel a job. A queued job never starts; a running one stops at its next training
    step and turns `cancelled` once its worker confirms. Repeating a cancel is harmless."""
    _refuse_if_finished(job)
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        lifecycle.request_cancel(session, job.id)
        job = _existing_job(session, job.id, None)
        _refuse_if_finished(job)  # it may have ended meanwhile
        log.info("job %s: cancel requested, now %s", job.id, job.status)
    if job.status == JobStatus.CANCELLING:
        response.status_code = 202
    return JobPublic.from_job(job)


def _refuse_if_finished(job: Job) -> None:
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        raise HTTPException(409, f"job {job.id} has already ended: {job.status}")


def _job_id_that_exists(key: CurrentKeyDep, job_id: str) -> str:
    # Its own short session: the stream must not hold a pooled connection while it lasts.
    with get_session_factory()() as session:
        return _existing_job(session, job_id, key).id


async def _stream_slot(request: Request, key: CurrentKeyDep) -> AsyncIterator[None]:
    """One of the key's open event streams, held until its stream ends (429 when the key
    holds its most). With auth off there is no key to count against."""
    if key is None:
        yield
        return
    with request.app.state.stream_slots.taken(key.id):
        yield


async def _resume_after(
    job_id: Annotated[str, Depends(_job_id_that_exists)],
    last_event_id: Annotated[
        int | None,
        Header(ge=0, description="Resume after this event id (sent by EventSource itself)."),
    ] = None,
) -> int:
    """The event id the stream starts after; StreamOver (204) when the job has ended and
    nothing follows it, so a client that reconnects after the last event stops."""
    if last_event_id is not None:
        events, ended = await run_in_threadpool(_events_after, job_id, last_event_id)
        if ended and not events:
            raise StreamOver
    return last_event_id or 0


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        **NOT_FOUND,
        204: {
            "description": "The job has ended and no event follows Last-Event-ID: the "
            "stream is over for good (an EventSource stops reconnecting)."
        },
        429: error("The key holds its most open event streams."),
    },
    dependencies=[Depends(_stream_slot)],
)
async def job_events(
    *,
    job_id: Annotated[str, Depends(_job_id_that_exists)],
    after: Annotated[int, Depends(_resume_after)],
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: `status` changes, each training `step` (loss, lr) and each
    `epoch`'s metrics, in order, from the start or after Last-Event-ID. The stream ends
    after the job's final status, or after TRAINSERVE_MAX_STREAM_SECONDS (EventSource then
    reconnects with Last-Event-ID and goes on); a reconnect once the job has ended and
    every event was sent is answered 204, so the client stops."""
    settings = get_settings()
    ends_at = time.monotonic() + settings.max_stream_seconds
    seq = after
    while time.monotonic() < ends_at:
        events, ended = await run_in_threadpool(_events_after, job_id, seq)
        for event in events:
            seq = event.seq
            yield ServerSentEvent(id=str(event.seq), event=event.kind, data=event.data)
        if ended and not events:
            return
        if not events:
            await asyncio.sleep(settings.events_poll_seconds)


def _events_after(job_id: str, seq: int) -> tuple[list[JobEvent], bool]:
    with get_session_factory()() as session:
        # Status first: if it has ended, the events read next include the final one.
        job = jobs.get_job(session, job_id)
        if job is None:  # deleted mid-stream (only an ended job can be): nothing more comes
            return [], True
        ended = job.status in ENDED
        return records.events_after(session, job_id, seq), ended


@router.delete(
    "/{job_id}",
    status_code=204,
    responses={
        **NOT_FOUND,
        409: error("The job has not ended, or an alias points at its model version."),
    },
)
async def delete_job(
    *, session: SessionDep, settings: SettingsDep, server: ModelServerDep, job: ExistingJobDep
) -> None:
    """Delete an ended job of the key's: its epochs, events, metric series, model version
    and files."""
    job_id = job.id
    try:
        model = await run_in_threadpool(jobs.delete_job, session, job_id)
    except LookupError as exc:
        raise _no_such_job(job_id) from exc
    except jobs.JobNotEnded as exc:
        raise HTTPException(409, str(exc)) from exc
    except IntegrityError as exc:  # an alias was moved onto its version meanwhile
        raise HTTPException(409, f"job {job_id}: an alias now points at its model") from exc
    await run_in_threadpool(get_store(settings).delete_under, job_prefix(job_id))
    if model is not None:
        forget_version(server, settings, model)
    log.info("job %s: deleted", job_id)


@router.get("/{job_id}/timeline", responses=NOT_FOUND)
def job_timeline(*, session: SessionDep, job: ExistingJobDep) -> JobTimeline:
    """Every change of the job's status, oldest first, with its attempt and, where the
    change says, why it ended, its error or the epoch it resumed from: the status events
    of its stream without the steps and epochs between them."""
    changes = [
        StatusChange(seq=event.seq, at=event.created_at, **event.data)
        for event in records.status_events(session, job.id)
    ]
    return JobTimeline(job_id=job.id, changes=changes)


@router.get("/{job_id}/metrics", responses=NOT_FOUND)
def job_metrics(
    *,
    session: SessionDep,
    job: ExistingJobDep,
    name: MetricName = "loss",
    max_points: Annotated[int, Query(ge=1, le=10_000)] = 500,
    step_min: Annotated[
        int | None, Query(ge=0, description="Only steps from this one on (a zoomed view).")
    ] = None,
    step_max: Annotated[int | None, Query(ge=0, description="Only steps up to this one.")] = None,
) -> MetricSeries:
    """A metric over training steps: per step (`loss`, `lr`), per epoch (`train_loss`,
    `val_accuracy`, …) or the worker's use while it trained (`cpu_percent`, `memory_mib`,
    `gpu_percent`, `gpu_memory_mib`). Longer series are averaged into at most `max_points`
    buckets by the database; each point has the bucket's last step, mean, min, max, count. With
    `step_min` and `step_max` only those steps are bucketed: a zoomed chart gets finer
    points."""
    if step_min is not None and step_max is not None and step_min > step_max:
        raise HTTPException(422, f"step_min {step_min} is after step_max {step_max}")
    points = records.metric_series(session, job.id, name, max_points, step_min, step_max)
    return MetricSeries.of(job.id, name, points)
