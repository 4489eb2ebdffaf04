"""Jobs as submitted and read: store one, find one, list and count them."""

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Connection, Row, bindparam, func, select
from sqlalchemy.orm import Session

from app.jobspec import JobSpec
from app.store.datasets import drop_unnamed_tombstones
from app.store.pages import after, cut_page, decode_cursor, newest_first
from app.store.tables import (
    ENDED,
    EpochMetrics,
    Job,
    JobEvent,
    JobStatus,
    ModelVersion,
    Sweep,
    SweepStatus,
    is_id,
    new_id,
)
from app.store.versions import remove_version


def add_job(session: Session, spec: JobSpec, sources: dict[str, str], epochs: int, **fields) -> Job:
    """Store a queued job, its spec resolved (app.recipes), with its first event; `epochs`
    is what the job shows until the worker sizes a time budget's."""
    job = stage_job(session, spec, sources, epochs, **fields)
    session.commit()
    return job


def stage_job(
    session: Session, spec: JobSpec, sources: dict[str, str], epochs: int, **fields
) -> Job:
    """add_job's rows, added to the session for the caller to commit (a sweep's trials are
    added under their sweep's lock)."""
    job = Job(
        id=new_id(),
        task=spec.task,
        dataset_id=spec.dataset_id,
        name=spec.name or spec.task,
        arch=spec.model.arch,
        spec=spec.model_dump(mode="json"),
        spec_sources=sources,
        epochs=epochs,
        max_attempts=spec.limits.max_attempts,
        event_seq=1,
        **fields,
    )
    session.add(job)
    session.add(JobEvent(job_id=job.id, seq=1, kind="status", data={"status": JobStatus.QUEUED}))
    return job


class JobNotEnded(Exception):
    """A job that is queued, running or being cancelled cannot be deleted."""

    def __init__(self, job: Job):
        super().__init__(f"job {job.id} is {job.status}: cancel it and wait for it to end first")


def delete_job(session: Session, job_id: str) -> ModelVersion | None:
    """Delete an ended job with its epochs, events, metric series and model version, and the
    tombstones of deleted datasets only it still named. Returns the version it had, if any
    (its checkpoint lies in the job's folder, which the caller removes once this has
    committed). Raises LookupError for no such job, JobNotEnded, and VersionAliased while
    an alias points at its version."""
    job = session.get(Job, job_id, with_for_update=True) if is_id(job_id) else None
    if job is None:
        raise LookupError(f"no job with id {job_id!r}")
    if job.status not in ENDED:
        session.rollback()
        raise JobNotEnded(job)
    model = session.scalar(select(ModelVersion).where(ModelVersion.job_id == job_id))
    if model is not None:
        remove_version(session, model)
    session.delete(job)
    session.flush()
    trained_on = [job.dataset_id, (job.spec.get("validation") or {}).get("dataset_id")]
    drop_unnamed_tombstones(session, [dataset_id for dataset_id in trained_on if dataset_id])
    session.commit()
    return model


def get_job(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id) if is_id(job_id) else None


def readable_job_ids(session: Session, job_ids: Sequence[str], owner: str | None) -> set[str]:
    """Those of the jobs that exist and are the owner's key's (all of them when owner is None)."""
    query = select(Job.id).where(Job.id.in_(job_ids))
    if owner is not None:
        query = query.where(Job.api_key_id == owner)
    return set(session.scalars(query))


def find_job_by_idempotency_key(session: Session, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.idempotency_key == key))


# What the API reads of jobs: a listing's summaries, and one job's full view.
# Columns, not ORM objects: a page is one query, a job one or two, and neither builds an object
# per row or per epoch (py-spy, a page of 20 at c=32: loading Job, its history and model
# took 29 % of the API's time, JobPublic.from_job 14 %). The statements are built once,
# with bound parameters: building one and computing its cache key took most of the 1 ms
# of CPU a read cost. They run on a Connection (app.store.db.read_only_connection): an ORM
# session's execution path cost as much again.

JOB_SUMMARY = (
    Job.id,
    Job.name,
    Job.task,
    Job.arch,
    Job.dataset_id,
    Job.status,
    Job.end_reason,
    Job.attempt,
    Job.max_attempts,
    Job.epoch,
    Job.epochs,
    Job.best_epoch,
    Job.best_val_accuracy,
    ModelVersion.id.label("model_id"),
    Job.device,
    Job.error,
    Job.sweep_id,
    Job.trial_number,
    Job.created_at,
    Job.queued_at,
    Job.started_at,
    Job.heartbeat_at,
    Job.finished_at,
)
JOB_DETAILS = (
    Job.queue,
    Job.worker,
    Job.resumed_from_epoch,
    Job.cancel_requested_at,
    Job.spec,
    Job.spec_sources,
    Job.event_seq.label("last_event_id"),
    ModelVersion.evaluation,
)

EPOCH_HISTORY = (
    EpochMetrics.epoch,
    EpochMetrics.train_loss,
    EpochMetrics.train_accuracy,
    EpochMetrics.val_loss,
    EpochMetrics.val_accuracy,
    EpochMetrics.seconds,
    EpochMetrics.samples_per_second,
)


def _latest_epoch(column):
    """A listing's figure of the job's latest epoch: one indexed row per job, not its history."""
    return (
        select(column)
        .where(EpochMetrics.job_id == Job.id)
        .order_by(EpochMetrics.epoch.desc())
        .limit(1)
        .scalar_subquery()
        .label(f"last_{column.key}")
    )


LISTING = (
    *JOB_SUMMARY,
    _latest_epoch(EpochMetrics.val_accuracy),
    _latest_epoch(EpochMetrics.val_loss),
)


def _with_model_id(*columns):
    return select(*columns).outerjoin(ModelVersion, ModelVersion.job_id == Job.id)


JOB_BY_ID = _with_model_id(*JOB_SUMMARY, *JOB_DETAILS).where(Job.id == bindparam("job_id"))
# A job is read for a key with one more condition in the same statement: the key's own.
OWNED = Job.api_key_id == bindparam("owner")
EPOCH_FIELDS = tuple(column.key for column in EPOCH_HISTORY)
# On PostgreSQL a job and its history are one statement, the history as a JSON array of
# EPOCH_HISTORY arrays: every statement is a round trip to the server (GET /jobs/{id}: 0.2
# ms less CPU and 0.35 ms less time with one). SQLite runs in the process, with no round
# trip to save, and its JSON writes floats to 15 digits: there the history is a second
# statement.
HISTORY_AS_JSON = (
    select(
        func.json_agg(func.json_build_array(*EPOCH_HISTORY)).aggregate_order_by(EpochMetrics.epoch)
    )
    .where(EpochMetrics.job_id == Job.id)
    .scalar_subquery()
)
JOB_WITH_HISTORY_BY_ID = _with_model_id(
    *JOB_SUMMARY, *JOB_DETAILS, HISTORY_AS_JSON.label("history")
).where(Job.id == bindparam("job_id"))
# Each of the two, for one key: (with history, owned) -> statement.
JOB_READS = {
    (False, False): JOB_BY_ID,
    (False, True): JOB_BY_ID.where(OWNED),
    (True, False): JOB_WITH_HISTORY_BY_ID,
    (True, True): JOB_WITH_HISTORY_BY_ID.where(OWNED),
}
HISTORY_OF_JOB = (
    select(*EPOCH_HISTORY)
    .where(EpochMetrics.job_id == bindparam("job_id"))
    .order_by(EpochMetrics.epoch)
)


@lru_cache
def _job_summaries(
    by_status: bool, by_task: bool, by_name: bool, after_cursor: bool, by_owner: bool
):
    """The listing's statement for one combination of its filters."""
    query = _with_model_id(*LISTING)
    if by_owner:
        query = query.where(OWNED)
    if by_status:
        query = query.where(Job.status.in_(bindparam("statuses", expanding=True)))
    if by_task:
        query = query.where(Job.task == bindparam("task"))
    if by_name:
        query = query.where(Job.name == bindparam("name"))
    if after_cursor:
        query = query.where(after(Job, bindparam("created"), bindparam("row_id")))
    return query.order_by(*newest_first(Job)).limit(bindparam("rows"))


def list_job_summaries(
    connection: Connection,
    limit: int,
    cursor: str | None,
    statuses: Sequence[str] | None = None,
    task: str | None = None,
    name: str | None = None,
    owner: str | None = None,
):
    """A page of jobs (of the owner's key, if given), newest first, as rows of LISTING; and
    the next cursor."""
    values: dict[str, object] = {
        "statuses": statuses,
        "task": task,
        "name": name,
        "owner": owner,
        "rows": limit + 1,
    }
    if cursor:
        values["created"], values["row_id"] = decode_cursor(cursor)
    query = _job_summaries(bool(statuses), bool(task), bool(name), bool(cursor), owner is not None)
    return cut_page(connection.execute(query, values).all(), limit)


def read_job(
    connection: Connection, job_id: str, owner: str | None = None
) -> tuple[Row, list[dict]] | None:
    """One job (if it is the owner's key's, when one is given) as a row of JOB_SUMMARY and
    JOB_DETAILS, with its history in epoch order, each epoch a dict of EPOCH_FIELDS; None if
    there is no such job."""
    if not is_id(job_id):
        return None
    values = {"job_id": job_id, "owner": owner}
    with_history = connection.dialect.name == "postgresql"
    query = JOB_READS[with_history, owner is not None]
    if with_history:
        job = connection.execute(query, values).one_or_none()
        if job is None:
            return None
        return job, [dict(zip(EPOCH_FIELDS, epoch, strict=True)) for epoch in job.history or ()]
    job = connection.execute(query, values).one_or_none()
    if job is None:
        return None
    history = connection.execute(HISTORY_OF_JOB, {"job_id": job_id})
    return job, [epoch._asdict() for epoch in history]


def count_open_jobs(session: Session, api_key_id: str) -> int:
    """The key's jobs that have not ended (queued, running or cancelling), a running sweep
    counted as one job whatever its trials."""
    jobs = session.execute(
        select(func.count())
        .select_from(Job)
        .where(Job.api_key_id == api_key_id, Job.status.notin_(ENDED), Job.sweep_id.is_(None))
    ).scalar_one()
    sweeps = session.execute(
        select(func.count())
        .select_from(Sweep)
        .where(Sweep.api_key_id == api_key_id, Sweep.status == SweepStatus.RUNNING)
    ).scalar_one()
    return jobs + sweeps


def count_jobs_by_status(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())


def count_queued(session: Session, queued_before: datetime) -> dict[str, int]:
    """Queue -> its jobs queued before `queued_before`."""
    counted = session.execute(
        select(Job.queue, func.count())
        .where(Job.status == JobStatus.QUEUED, Job.queued_at < queued_before)
        .group_by(Job.queue)
    )
    return {queue: count for queue, count in counted}


def queued_job_ids(session: Session, limit: int, queue: str) -> list[str]:
    """The queue's jobs, oldest queued first: a re-queued job goes before newer ones."""
    return list(
        session.scalars(
            select(Job.id)
            .where(Job.status == JobStatus.QUEUED, Job.queue == queue)
            .order_by(Job.queued_at, Job.id)
            .limit(limit)
        )
    )
