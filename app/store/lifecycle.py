"""A job's state changes: claim, lease, cancel, finish, fail, re-queue, recover.

Each change is a conditional UPDATE (it happens only if the job is still in the state the
caller saw) committed with its status event, so the API, the worker and the sweeper can
race for one job and exactly one of them wins.
"""

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.store.tables import LEASED, EndReason, Job, JobEvent, JobStatus, ModelVersion, utcnow
from app.store.versions import add_version

# Fields of a change that its status event repeats.
STATUS_EVENT_FIELDS = ("end_reason", "error", "resumed_from_epoch")


class LeaseLost(RuntimeError):
    """Another worker (or the sweeper) took the job over: stop without writing."""


def update_job(session: Session, job_id: str, where: tuple, returning: tuple, **values):
    """UPDATE one job where `where` still holds; the RETURNING row, or None if none matched."""
    return session.execute(
        update(Job)
        .where(Job.id == job_id, *where)
        .values(**values)
        .returning(*returning)
        .execution_options(synchronize_session=False)
    ).one_or_none()


def transition(session: Session, job_id: str, where: tuple, **values) -> bool:
    """Change one job if `where` still holds, and log the change as an event, in one commit.

    Bumping event_seq locks the job's row, so concurrent writers (API, worker, sweeper)
    get consecutive sequence numbers in commit order: a stream never skips an event.
    """
    returning = (Job.event_seq, Job.status, Job.attempt)
    row = update_job(session, job_id, where, returning, **values, event_seq=Job.event_seq + 1)
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


def held_by(owner: str) -> tuple:
    """The condition that `owner` still holds the job's lease."""
    return (Job.lease_owner == owner, Job.status.in_(LEASED))


def lock_if_held(session: Session, job_id: str, owner: str) -> bool:
    """Lock the job's row for the caller's transaction if `owner` still holds its lease:
    what the worker then writes in that transaction is fenced by the lease (a sweeper or
    worker taking the job over waits for its commit, or came first and this is False)."""
    locked = update_job(session, job_id, held_by(owner), (Job.id,), lease_owner=Job.lease_owner)
    return locked is not None


def lease_held(session: Session, job_id: str, owner: str) -> bool:
    """Whether `owner` holds the job's lease now, as the database says (not as a heartbeat
    said last: a worker frozen and thawed may not have heard yet)."""
    held = session.scalar(select(Job.id).where(Job.id == job_id, *held_by(owner)))
    session.commit()
    return held is not None


def claim_job(
    session: Session,
    job_id: str,
    owner: str,
    lease_seconds: float,
    queue: str = "trainserve",
    worker: str | None = None,
) -> bool:
    """Take a queued job of `queue` for one attempt, for `worker` (its Celery node name);
    False if it is not queued (taken or ended) or is another queue's."""
    now = utcnow()
    return transition(
        session,
        job_id,
        (Job.status == JobStatus.QUEUED, Job.queue == queue),
        status=JobStatus.RUNNING,
        worker=worker,
        attempt=Job.attempt + 1,
        lease_owner=owner,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        heartbeat_at=now,
        started_at=func.coalesce(Job.started_at, now),
    )


def renew_lease(
    session: Session, job_id: str, owner: str, lease_seconds: float
) -> JobStatus | None:
    """Extend the owner's lease; returns the job's status, or None if the lease was lost."""
    now = utcnow()
    row = update_job(
        session,
        job_id,
        held_by(owner),
        (Job.status,),
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        heartbeat_at=now,
    )
    session.commit()
    return JobStatus(row.status) if row else None


def set_device(session: Session, job_id: str, owner: str, device: str) -> None:
    update_job(session, job_id, held_by(owner), (Job.id,), device=device)
    session.commit()


def plan_epochs(
    session: Session, job_id: str, owner: str, spec: dict, sources: dict[str, str]
) -> None:
    """The worker sized a time budget's epochs: the spec, its sources and the job's epoch
    count say so from now on, and a resumed attempt trains to the same count."""
    epochs = spec["hyperparameters"]["epochs"]
    update_job(
        session, job_id, held_by(owner), (Job.id,), spec=spec, spec_sources=sources, epochs=epochs
    )
    session.commit()


def request_cancel(session: Session, job_id: str) -> bool:
    """A queued job is cancelled at once; a running one is asked to stop. False: neither."""
    now = utcnow()
    if transition(
        session,
        job_id,
        (Job.status == JobStatus.QUEUED,),
        status=JobStatus.CANCELLED,
        end_reason=EndReason.CANCELLED,
        finished_at=now,
    ):
        return True
    return transition(
        session,
        job_id,
        (Job.status == JobStatus.RUNNING,),
        status=JobStatus.CANCELLING,
        cancel_requested_at=now,
    )


def confirm_cancelled(session: Session, job_id: str, owner: str) -> bool:
    return _end(session, job_id, held_by(owner), JobStatus.CANCELLED, EndReason.CANCELLED)


def end_pruned_before_first_epoch(session: Session, job_id: str, owner: str) -> bool:
    """A sweep's trial its rule stopped partway through its first epoch: no epoch ended, so
    there is no model to serve, and it ends cancelled (by its sweep), end_reason pruned."""
    return _end(session, job_id, held_by(owner), JobStatus.CANCELLED, EndReason.PRUNED)


def _end(
    session: Session, job_id: str, where: tuple, status: JobStatus, reason: EndReason, **values
) -> bool:
    return transition(
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


def finish_job(
    session: Session, job_id: str, owner: str, model: ModelVersion, reason: EndReason
) -> bool:
    """Mark the job succeeded, register its model and move its `latest`, in one transaction
    (which also bumps the registry's generation): a job reads succeeded only once its
    model can be served."""
    try:
        return _register_and_end(session, job_id, owner, model, reason)
    except IntegrityError:
        # Two workers registered the first versions of one name at once, and both inserted
        # its `latest` (seen with two machines): the one that lost tries again, and now
        # finds the row, which it locks and moves.
        session.rollback()
        return _register_and_end(session, job_id, owner, model, reason)


def _register_and_end(
    session: Session, job_id: str, owner: str, model: ModelVersion, reason: EndReason
) -> bool:
    add_version(session, session.get_one(Job, job_id), model)
    return _end(
        session,
        job_id,
        (Job.lease_owner == owner, Job.status == JobStatus.RUNNING),
        JobStatus.SUCCEEDED,
        reason,
        checkpoint_path=model.checkpoint_path,
        error=None,  # an earlier attempt's error is in the job's events
    )


def fail_job(session: Session, job_id: str, owner: str, error: str, reason: EndReason) -> bool:
    """End a job as failed, if this worker still holds it."""
    session.rollback()
    return _end(session, job_id, held_by(owner), JobStatus.FAILED, reason, error=error)


def requeue_job(session: Session, job_id: str, where: tuple, error: str) -> bool:
    """Back to the queue for another attempt, after an infrastructure failure."""
    return transition(
        session,
        job_id,
        where,
        status=JobStatus.QUEUED,
        error=error,
        queued_at=utcnow(),
        lease_owner=None,
        lease_expires_at=None,
    )


def hand_back_job(session: Session, job_id: str, owner: str) -> bool:
    """A stopping worker returns its job to the queue; the attempt it used is not counted."""
    return transition(
        session,
        job_id,
        held_by(owner),
        status=JobStatus.QUEUED,
        attempt=Job.attempt - 1,
        queued_at=utcnow(),
        lease_owner=None,
        lease_expires_at=None,
    )


def retry_or_fail(session: Session, job: Job, owner: str, error: str) -> bool:
    """After an infrastructure failure: another attempt if any is left. True if re-queued."""
    session.rollback()
    if job.attempt < job.max_attempts:
        return requeue_job(session, job.id, held_by(owner), error)
    fail_job(
        session,
        job.id,
        owner,
        f"{error} (attempt {job.attempt} of {job.max_attempts})",
        EndReason.ATTEMPTS_EXHAUSTED,
    )
    return False


def expired_leases(session: Session) -> list[Job]:
    return list(
        session.scalars(select(Job).where(Job.status.in_(LEASED), Job.lease_expires_at < utcnow()))
    )


def recover_expired(session: Session, job: Job) -> JobStatus | None:
    """A job whose worker stopped renewing its lease: cancel, re-queue or fail it.

    Guarded by the lease as read, so a heartbeat that lands first wins. Returns the job's
    new status, or None when nothing changed.
    """
    where = (
        Job.lease_owner == job.lease_owner,
        Job.lease_expires_at < utcnow(),
        Job.status == job.status,
    )
    if job.status == JobStatus.CANCELLING:  # nobody is left to confirm: the job has stopped
        ended = _end(session, job.id, where, JobStatus.CANCELLED, EndReason.CANCELLED)
        return JobStatus.CANCELLED if ended else None
    error = f"worker {job.lease_owner} stopped sending heartbeats"
    if job.attempt < job.max_attempts:
        return JobStatus.QUEUED if requeue_job(session, job.id, where, error) else None
    error += f" (attempt {job.attempt} of {job.max_attempts})"
    failed = _end(
        session, job.id, where, JobStatus.FAILED, EndReason.ATTEMPTS_EXHAUSTED, error=error
    )
    return JobStatus.FAILED if failed else None
