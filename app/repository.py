"""Every query the service runs, named for what it does."""

import base64
import re
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from app.schemas import JobCreate
from app.tables import (
    ENDED,
    LEASED,
    AliasMove,
    ApiKey,
    Dataset,
    EpochMetrics,
    Job,
    JobEvent,
    MetricPoint,
    ModelAlias,
    ModelVersion,
    new_id,
    utcnow,
)

ID_PATTERN = re.compile(r"[0-9a-f]{32}")

LATEST = "latest"
PRODUCTION = "production"


class InvalidCursor(ValueError):
    pass


def is_id(value: str) -> bool:
    """Ids are 32 hex digits: anything else matches no row and never reaches the database
    (PostgreSQL refuses some strings, such as those holding NUL, with an error)."""
    return ID_PATTERN.fullmatch(value) is not None


class VersionAliased(Exception):
    """A model version an alias points at cannot be deleted."""

    def __init__(self, aliases: list[str]):
        super().__init__(f"aliases point at this version: {', '.join(aliases)}")
        self.aliases = aliases


# ---- pagination (newest first, keyset on created_at then id) ----------------------------


def encode_cursor(row: Dataset | Job | ApiKey) -> str:
    return base64.urlsafe_b64encode(f"{row.created_at.isoformat()}|{row.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        if not is_id(row_id):
            raise ValueError(row_id)
        return datetime.fromisoformat(created), row_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one this service returned") from exc


def _page(session: Session, table, limit: int, cursor: str | None, *filters):
    return _paged(session.scalars, select(table).where(*filters), table, limit, cursor)


def _paged(run, query, table, limit: int, cursor: str | None):
    """A page of `query`'s rows (run by session.scalars) and the next cursor."""
    if cursor:
        query = query.where(_after(table, *_decode_cursor(cursor)))
    rows = run(query.order_by(*_newest_first(table)).limit(limit + 1)).all()
    return _cut_page(rows, limit)


def _after(table, created, row_id):
    """The rows after the cursor's (created, id), in the order of _newest_first."""
    return (table.created_at < created) | ((table.created_at == created) & (table.id < row_id))


def _newest_first(table) -> tuple:
    return table.created_at.desc(), table.id.desc()


def _cut_page(rows: list, limit: int):
    """A page of the first `limit` of `limit + 1` rows, and the cursor to the next page."""
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
    return session.get(Dataset, dataset_id) if is_id(dataset_id) else None


def list_datasets(session: Session, limit: int, cursor: str | None):
    return _page(session, Dataset, limit, cursor)


# ---- jobs: submit, read, list -------------------------------------------------------------


def add_job(session: Session, spec: JobCreate, **fields) -> Job:
    """Store a queued job with its first event."""
    job = Job(
        id=new_id(),
        task=spec.task,
        dataset_id=spec.dataset_id,
        spec=spec.model_dump(mode="json"),
        epochs=spec.hyperparameters.epochs,
        max_attempts=spec.limits.max_attempts,
        event_seq=1,
        **fields,
    )
    session.add(job)
    session.add(JobEvent(job_id=job.id, seq=1, kind="status", data={"status": "queued"}))
    session.commit()
    return job


def get_job(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id) if is_id(job_id) else None


def find_job_by_idempotency_key(session: Session, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.idempotency_key == key))


def count_open_jobs(session: Session, api_key_id: str) -> int:
    """The key's jobs that have not ended (queued, running or cancelling)."""
    return session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.api_key_id == api_key_id, Job.status.notin_(ENDED))
    )


# ---- jobs: what the API reads (a listing's summaries, one job's full view) -----------------
# Columns, not ORM objects: a page is one query, a job two, and neither builds an object
# per row or per epoch (py-spy, a page of 20 at c=32: loading Job, its history and model
# took 29 % of the API's time, JobPublic.from_job 14 %). The statements are built once,
# with bound parameters: building one and computing its cache key took most of the 1 ms
# of CPU a read cost.

JOB_SUMMARY = (
    Job.id,
    func.coalesce(Job.spec["name"].as_string(), Job.task).label("name"),
    Job.task,
    Job.spec[("model", "arch")].as_string().label("arch"),
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
    Job.created_at,
    Job.queued_at,
    Job.started_at,
    Job.heartbeat_at,
    Job.finished_at,
)
JOB_DETAILS = (Job.resumed_from_epoch, Job.cancel_requested_at, Job.spec)
EPOCH_HISTORY = (
    EpochMetrics.epoch,
    EpochMetrics.train_loss,
    EpochMetrics.train_accuracy,
    EpochMetrics.val_loss,
    EpochMetrics.val_accuracy,
    EpochMetrics.seconds,
    EpochMetrics.samples_per_second,
)


def _with_model_id(*columns):
    return select(*columns).outerjoin(ModelVersion, ModelVersion.job_id == Job.id)


JOB_BY_ID = _with_model_id(*JOB_SUMMARY, *JOB_DETAILS).where(Job.id == bindparam("job_id"))
HISTORY_OF_JOB = (
    select(*EPOCH_HISTORY)
    .where(EpochMetrics.job_id == bindparam("job_id"))
    .order_by(EpochMetrics.epoch)
)


@lru_cache
def _job_summaries(by_status: bool, by_task: bool, after_cursor: bool):
    """The listing's statement for one combination of its filters."""
    query = _with_model_id(*JOB_SUMMARY)
    if by_status:
        query = query.where(Job.status.in_(bindparam("statuses", expanding=True)))
    if by_task:
        query = query.where(Job.task == bindparam("task"))
    if after_cursor:
        query = query.where(_after(Job, bindparam("created"), bindparam("row_id")))
    return query.order_by(*_newest_first(Job)).limit(bindparam("rows"))


def list_job_summaries(
    session: Session,
    limit: int,
    cursor: str | None,
    statuses: list[str] | None = None,
    task: str | None = None,
):
    """A page of jobs, newest first, as rows of JOB_SUMMARY; and the next cursor."""
    values = {"statuses": statuses, "task": task, "rows": limit + 1}
    if cursor:
        values["created"], values["row_id"] = _decode_cursor(cursor)
    query = _job_summaries(bool(statuses), bool(task), bool(cursor))
    return _cut_page(session.execute(query, values).all(), limit)


def read_job(session: Session, job_id: str):
    """One job as a row of JOB_SUMMARY and JOB_DETAILS, with its EPOCH_HISTORY rows in
    epoch order; None if there is no such job."""
    if not is_id(job_id):
        return None
    job = session.execute(JOB_BY_ID, {"job_id": job_id}).one_or_none()
    if job is None:
        return None
    return job, session.execute(HISTORY_OF_JOB, {"job_id": job_id}).all()


# ---- jobs: state changes, each a conditional UPDATE plus its status event ------------------


def _update_job(session: Session, job_id: str, where: tuple, returning: tuple, **values):
    """UPDATE one job where `where` still holds; the RETURNING row, or None if none matched."""
    return session.execute(
        update(Job)
        .where(Job.id == job_id, *where)
        .values(**values)
        .returning(*returning)
        .execution_options(synchronize_session=False)
    ).one_or_none()


def _transition(session: Session, job_id: str, where: tuple, **values) -> bool:
    """Change one job if `where` still holds, and log the change as an event, in one commit.

    Bumping event_seq locks the job's row, so concurrent writers (API, worker, sweeper)
    get consecutive sequence numbers in commit order: a stream never skips an event.
    """
    returning = (Job.event_seq, Job.status, Job.attempt)
    row = _update_job(session, job_id, where, returning, **values, event_seq=Job.event_seq + 1)
    if row is None:
        session.rollback()
        return False
    data = {"status": row.status, "attempt": row.attempt} | {
        name: values[name] for name in STATUS_EVENT_FIELDS if name in values
    }
    session.add(JobEvent(job_id=job_id, seq=row.event_seq, kind="status", data=data))
    session.commit()
    session.expire_all()
    return True


STATUS_EVENT_FIELDS = ("end_reason", "error", "resumed_from_epoch")


def _held_by(owner: str) -> tuple:
    return (Job.lease_owner == owner, Job.status.in_(LEASED))


def claim_job(session: Session, job_id: str, owner: str, lease_seconds: float) -> bool:
    """Take a queued job for one attempt; False if it is not queued (taken or ended)."""
    now = utcnow()
    return _transition(
        session,
        job_id,
        (Job.status == "queued",),
        status="running",
        attempt=Job.attempt + 1,
        lease_owner=owner,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        heartbeat_at=now,
        started_at=func.coalesce(Job.started_at, now),
    )


def queued_job_ids(session: Session, limit: int) -> list[str]:
    """Oldest queued first: a re-queued job goes before newer ones."""
    return list(
        session.scalars(
            select(Job.id)
            .where(Job.status == "queued")
            .order_by(Job.queued_at, Job.id)
            .limit(limit)
        )
    )


def renew_lease(session: Session, job_id: str, owner: str, lease_seconds: float) -> str | None:
    """Extend the owner's lease; returns the job's status, or None if the lease was lost."""
    now = utcnow()
    row = _update_job(
        session,
        job_id,
        _held_by(owner),
        (Job.status,),
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        heartbeat_at=now,
    )
    session.commit()
    return row.status if row else None


def set_device(session: Session, job_id: str, owner: str, device: str) -> None:
    _update_job(session, job_id, _held_by(owner), (Job.id,), device=device)
    session.commit()


def request_cancel(session: Session, job_id: str) -> bool:
    """A queued job is cancelled at once; a running one is asked to stop. False: neither."""
    now = utcnow()
    if _transition(
        session,
        job_id,
        (Job.status == "queued",),
        status="cancelled",
        end_reason="cancelled",
        finished_at=now,
    ):
        return True
    return _transition(
        session, job_id, (Job.status == "running",), status="cancelling", cancel_requested_at=now
    )


def confirm_cancelled(session: Session, job_id: str, owner: str) -> bool:
    return _end(session, job_id, _held_by(owner), "cancelled", "cancelled")


def _end(session: Session, job_id: str, where: tuple, status: str, reason: str, **values) -> bool:
    return _transition(
        session,
        job_id,
        where,
        status=status,
        end_reason=reason,
        finished_at=utcnow(),
        lease_owner=None,
        lease_expires_at=None,
        **values,
    )


def finish_job(session: Session, job_id: str, owner: str, model: ModelVersion, reason: str) -> bool:
    """Mark the job succeeded, register its model and move its `latest`, in one transaction."""
    job = session.get(Job, job_id)
    model.spec = job.spec
    model.data_sha256 = session.scalar(select(Dataset.sha256).where(Dataset.id == job.dataset_id))
    session.add(model)
    session.flush()
    _move_alias(session, model.name, LATEST, model.id, action="job_succeeded")
    return _end(
        session,
        job_id,
        (Job.lease_owner == owner, Job.status == "running"),
        "succeeded",
        reason,
        checkpoint_path=model.checkpoint_path,
        error=None,  # an earlier attempt's error is in the job's events
    )


def fail_job(session: Session, job_id: str, owner: str, error: str, reason: str) -> bool:
    """End a job as failed, if this worker still holds it."""
    session.rollback()
    return _end(session, job_id, _held_by(owner), "failed", reason, error=error)


def requeue_job(session: Session, job_id: str, where: tuple, error: str) -> bool:
    """Back to the queue for another attempt, after an infrastructure failure."""
    return _transition(
        session,
        job_id,
        where,
        status="queued",
        error=error,
        queued_at=utcnow(),
        lease_owner=None,
        lease_expires_at=None,
    )


def hand_back_job(session: Session, job_id: str, owner: str) -> bool:
    """A stopping worker returns its job to the queue; the attempt it used is not counted."""
    return _transition(
        session,
        job_id,
        _held_by(owner),
        status="queued",
        attempt=Job.attempt - 1,
        queued_at=utcnow(),
        lease_owner=None,
        lease_expires_at=None,
    )


def retry_or_fail(session: Session, job: Job, owner: str, error: str) -> bool:
    """After an infrastructure failure: another attempt if any is left. True if re-queued."""
    session.rollback()
    if job.attempt < job.max_attempts:
        return requeue_job(session, job.id, _held_by(owner), error)
    fail_job(
        session,
        job.id,
        owner,
        f"{error} (attempt {job.attempt} of {job.max_attempts})",
        "attempts_exhausted",
    )
    return False


def expired_leases(session: Session) -> list[Job]:
    return list(
        session.scalars(select(Job).where(Job.status.in_(LEASED), Job.lease_expires_at < utcnow()))
    )


def recover_expired(session: Session, job: Job) -> str | None:
    """A job whose worker stopped renewing its lease: cancel, re-queue or fail it.

    Guarded by the lease as read, so a heartbeat that lands first wins. Returns what
    happened, or None when nothing changed.
    """
    where = (
        Job.lease_owner == job.lease_owner,
        Job.lease_expires_at < utcnow(),
        Job.status == job.status,
    )
    if job.status == "cancelling":  # nobody is left to confirm: the job has stopped
        return "cancelled" if _end(session, job.id, where, "cancelled", "cancelled") else None
    error = f"worker {job.lease_owner} stopped sending heartbeats"
    if job.attempt < job.max_attempts:
        return "queued" if requeue_job(session, job.id, where, error) else None
    error += f" (attempt {job.attempt} of {job.max_attempts})"
    return (
        "failed"
        if _end(session, job.id, where, "failed", "attempts_exhausted", error=error)
        else None
    )


def count_queued(session: Session, queued_before: datetime) -> int:
    return session.scalar(
        select(func.count()).where(Job.status == "queued", Job.queued_at < queued_before)
    )


# ---- jobs: what training reports ----------------------------------------------------------


def resume_job(session: Session, job_id: str, owner: str, epoch: int, step: int) -> None:
    """Record that this attempt continues after `epoch`; forget what came after it."""
    session.execute(
        delete(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.step > step)
    )
    session.execute(
        delete(EpochMetrics).where(EpochMetrics.job_id == job_id, EpochMetrics.epoch > epoch)
    )
    if not _transition(session, job_id, _held_by(owner), resumed_from_epoch=epoch, epoch=epoch):
        raise LeaseLost(job_id)


class LeaseLost(RuntimeError):
    """Another worker (or the sweeper) took the job over: stop without writing."""


def record_steps(session: Session, job_id: str, steps: list[tuple[int, int, float, float]]):
    """Per-step (step, epoch, loss, learning rate): metric points and one event per step."""
    if not steps:
        return
    first_seq = _reserve_events(session, job_id, len(steps)) - len(steps) + 1
    now = utcnow()
    # Core bulk inserts (executemany): several hundred rows a second, off the training's time.
    session.execute(
        insert(JobEvent),
        [
            {
                "job_id": job_id,
                "seq": seq,
                "kind": "step",
                "data": {"step": step, "epoch": epoch, "loss": loss, "lr": lr},
                "created_at": now,
            }
            for seq, (step, epoch, loss, lr) in enumerate(steps, start=first_seq)
        ],
    )
    session.execute(
        insert(MetricPoint),
        [
            {"job_id": job_id, "name": name, "step": step, "value": value}
            for step, _, loss, lr in steps
            for name, value in (("loss", loss), ("lr", lr))
        ],
    )
    session.commit()


def _reserve_events(session: Session, job_id: str, count: int) -> int:
    return _update_job(
        session, job_id, (), (Job.event_seq,), event_seq=Job.event_seq + count
    ).event_seq


EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def record_epoch(
    session: Session, job_id: str, owner: str, metrics: dict, step: int, is_best: bool
) -> None:
    """An epoch's metrics: history row, metric points at its last step, and an event."""
    values = {"epoch": metrics["epoch"]}
    if is_best:
        values |= {"best_epoch": metrics["epoch"], "best_val_accuracy": metrics["val_accuracy"]}
    row = _update_job(
        session, job_id, _held_by(owner), (Job.event_seq,), **values, event_seq=Job.event_seq + 1
    )
    if row is None:
        session.rollback()
        raise LeaseLost(job_id)
    session.add(EpochMetrics(job_id=job_id, **metrics))
    session.add_all(
        MetricPoint(job_id=job_id, name=name, step=step, value=metrics[name])
        for name in EPOCH_METRICS
    )
    session.add(JobEvent(job_id=job_id, seq=row.event_seq, kind="epoch", data=metrics))
    session.commit()


def events_after(session: Session, job_id: str, seq: int, limit: int = 1000) -> list[JobEvent]:
    return list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > seq)
            .order_by(JobEvent.seq)
            .limit(limit)
        )
    )


def metric_series(session: Session, job_id: str, name: str, max_points: int) -> list:
    """A metric's points, averaged by the database into at most max_points step buckets."""
    where = (MetricPoint.job_id == job_id, MetricPoint.name == name)
    first, last = session.execute(
        select(func.min(MetricPoint.step), func.max(MetricPoint.step)).where(*where)
    ).one()
    if first is None:
        return []
    width = -(-(last - first + 1) // max_points)  # steps per bucket, rounded up
    bucket = (MetricPoint.step - first) // width
    return session.execute(
        select(
            func.max(MetricPoint.step).label("step"),
            func.avg(MetricPoint.value).label("value"),
            func.min(MetricPoint.value).label("min"),
            func.max(MetricPoint.value).label("max"),
            func.count().label("count"),
        )
        .where(*where)
        .group_by(bucket)
        .order_by(func.max(MetricPoint.step))
    ).all()


# ---- models ------------------------------------------------------------------------------


def list_models(session: Session, limit: int, cursor: str | None, name: str | None = None):
    filters = [ModelVersion.name == name] if name else []
    return _page(session, ModelVersion, limit, cursor, *filters)


def find_model(session: Session, model_or_job_id: str) -> ModelVersion | None:
    """A model by its own id or by the id of the job that trained it."""
    if not is_id(model_or_job_id):
        return None
    return session.scalar(
        select(ModelVersion).where(
            (ModelVersion.id == model_or_job_id) | (ModelVersion.job_id == model_or_job_id)
        )
    )


# ---- API keys ----------------------------------------------------------------------------


def add_key(session: Session, key: ApiKey) -> ApiKey:
    session.add(key)
    session.commit()
    return key


def get_key(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id) if is_id(key_id) else None


def find_key_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    """The key with this hash, revoked or not."""
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))


def lock_key(session: Session, key_id: str) -> None:
    """Hold the key's row until commit, so its requests check their quota one at a time."""
    session.execute(select(ApiKey.id).where(ApiKey.id == key_id).with_for_update())


def list_keys(session: Session, limit: int, cursor: str | None):
    return _page(session, ApiKey, limit, cursor)


def count_active_admin_keys(session: Session) -> int:
    return session.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.scope == "admin", ApiKey.revoked_at.is_(None))
    )


def revoke_key(session: Session, key: ApiKey) -> ApiKey:
    key.revoked_at = utcnow()
    session.commit()
    return key


def delete_model(session: Session, model: ModelVersion) -> None:
    """Raises VersionAliased while an alias points at the version."""
    aliases = [a.alias for a in aliases_of_versions(session, [model.id]).get(model.id, [])]
    if aliases:
        raise VersionAliased(aliases)
    session.delete(model)
    session.commit()


def version_ids(session: Session) -> dict[str, str]:
    """Version id and job id -> version id, for every model version."""
    found = {}
    for version_id, job_id in session.execute(select(ModelVersion.id, ModelVersion.job_id)):
        found[version_id] = found[job_id] = version_id
    return found


def count_jobs_by_status(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())


def newest_name_per_task(session: Session) -> dict[str, str]:
    newest = (
        select(ModelVersion.task, func.max(ModelVersion.created_at).label("at"))
        .group_by(ModelVersion.task)
        .subquery()
    )
    rows = session.execute(
        select(ModelVersion.task, ModelVersion.name)
        .join(
            newest,
            (ModelVersion.task == newest.c.task) & (ModelVersion.created_at == newest.c.at),
        )
        .order_by(ModelVersion.id)
    ).all()
    return {task: name for task, name in rows}


# ---- aliases -----------------------------------------------------------------------------


def all_aliases(session: Session) -> dict[tuple[str, str], str]:
    """(name, alias) -> version id, for every alias."""
    rows = session.execute(select(ModelAlias.name, ModelAlias.alias, ModelAlias.version_id))
    return {(name, alias): version_id for name, alias, version_id in rows}


def aliases_of_name(session: Session, name: str) -> list[ModelAlias]:
    return list(
        session.scalars(
            select(ModelAlias).where(ModelAlias.name == name).order_by(ModelAlias.alias)
        )
    )


def aliases_of_versions(session: Session, version_ids: list[str]) -> dict[str, list[ModelAlias]]:
    found: dict[str, list[ModelAlias]] = {}
    for alias in session.scalars(
        select(ModelAlias).where(ModelAlias.version_id.in_(version_ids)).order_by(ModelAlias.alias)
    ):
        found.setdefault(alias.version_id, []).append(alias)
    return found


def move_alias(
    session: Session, name: str, alias: str, version_id: str, *, action: str, moved_by: str | None
) -> AliasMove:
    move = _move_alias(session, name, alias, version_id, action=action, moved_by=moved_by)
    session.commit()
    return move


def _move_alias(
    session: Session,
    name: str,
    alias: str,
    version_id: str,
    *,
    action: str,
    moved_by: str | None = None,
) -> AliasMove:
    current = session.get(ModelAlias, (name, alias), with_for_update=True)
    from_version_id = current.version_id if current else None
    if current is None:
        session.add(ModelAlias(name=name, alias=alias, version_id=version_id))
    else:
        current.version_id, current.moved_at = version_id, utcnow()
    move = AliasMove(
        name=name,
        alias=alias,
        from_version_id=from_version_id,
        to_version_id=version_id,
        action=action,
        moved_by=moved_by,
    )
    session.add(move)
    return move


def alias_moves(session: Session, name: str, alias: str, limit: int) -> list[AliasMove]:
    """The alias's moves, newest first."""
    return list(
        session.scalars(
            select(AliasMove)
            .where(AliasMove.name == name, AliasMove.alias == alias)
            .order_by(AliasMove.id.desc())
            .limit(limit)
        )
    )
