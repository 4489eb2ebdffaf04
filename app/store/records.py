"""What training reports about a job: per-step losses, epochs, the event stream, and the
metric series drawn from them."""

from collections.abc import Mapping, Sequence

from sqlalchemy import Row, delete, func, insert, select
from sqlalchemy.orm import Session

from app.jobspec import EPOCH_METRICS, STEP_METRICS, ResourceMetric
from app.store.lifecycle import LeaseLost, held_by, lock_if_held, transition, update_job
from app.store.tables import EpochMetrics, Job, JobEvent, MetricPoint, TrialCheck, utcnow


def resume_job(session: Session, job_id: str, owner: str, epoch: int, step: int) -> None:
    """Record that this attempt continues after `epoch`; forget what came after it. In one
    transaction, fenced by the lease."""
    _lock_or_lose(session, job_id, owner)
    _forget_after(session, job_id, epoch, step)
    if not transition(session, job_id, held_by(owner), resumed_from_epoch=epoch, epoch=epoch):
        raise LeaseLost(job_id)


def forget_progress_after(
    session: Session, job_id: str, owner: str, epoch: int = 0, step: int = 0
) -> None:
    """Delete the steps and epochs earlier attempts recorded past (`epoch`, `step`), if
    `owner` holds the lease; by default all of them, for an attempt that starts over: it
    records the same steps again."""
    _lock_or_lose(session, job_id, owner)
    _forget_after(session, job_id, epoch, step)
    session.commit()


def _lock_or_lose(session: Session, job_id: str, owner: str) -> None:
    if not lock_if_held(session, job_id, owner):
        session.rollback()
        raise LeaseLost(job_id)


def _forget_after(session: Session, job_id: str, epoch: int, step: int) -> None:
    session.execute(
        delete(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.step > step)
    )
    session.execute(
        delete(EpochMetrics).where(EpochMetrics.job_id == job_id, EpochMetrics.epoch > epoch)
    )
    session.execute(delete(TrialCheck).where(TrialCheck.job_id == job_id, TrialCheck.step > step))


def record_steps(
    session: Session,
    job_id: str,
    owner: str,
    steps: list[tuple[int, int, float, float]],
    resources: Mapping[ResourceMetric, float] | None = None,
):
    """Per-step (step, epoch, loss, learning rate): metric points and one event per step;
    `resources`, the worker's use sampled now, as metric points at the last of the steps.
    Raises LeaseLost, writing nothing, unless `owner` holds the job's lease."""
    if not steps:
        return
    first_seq = _reserve_events(session, job_id, owner, len(steps)) - len(steps) + 1
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
            for step, _, *values in steps
            for name, value in zip(STEP_METRICS, values, strict=True)
        ]
        + [
            {"job_id": job_id, "name": name, "step": steps[-1][0], "value": value}
            for name, value in (resources or {}).items()
        ],
    )
    session.commit()


def _reserve_events(session: Session, job_id: str, owner: str, count: int) -> int:
    """The job's last event number once `count` more are reserved; the row stays locked
    to the commit, so the lease is held until then."""
    row = update_job(
        session, job_id, held_by(owner), (Job.event_seq,), event_seq=Job.event_seq + count
    )
    if row is None:
        session.rollback()
        raise LeaseLost(job_id)
    return row.event_seq


def record_epoch(
    session: Session,
    job_id: str,
    owner: str,
    metrics: dict,
    step: int,
    is_best: bool,
    checkpoints: dict[str, str],
) -> None:
    """An epoch's metrics: history row, metric points at its last step, and an event; and
    `checkpoints`, the keys and sha256 of the objects that count from now on (Job columns
    last_checkpoint…, best_checkpoint…), in the same commit."""
    values: dict = {"epoch": metrics["epoch"], **checkpoints}
    if is_best:
        values |= {"best_epoch": metrics["epoch"], "best_val_accuracy": metrics["val_accuracy"]}
    row = update_job(
        session, job_id, held_by(owner), (Job.event_seq,), **values, event_seq=Job.event_seq + 1
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


def record_check(
    session: Session,
    job_id: str,
    owner: str,
    step: int,
    epochs: float,
    values: dict[str, float],
) -> None:
    """A trial's validation partway through an epoch (`values`: val_loss and val_accuracy),
    also as metric points at its step, so that its curves show it. Raises LeaseLost,
    writing nothing, unless `owner` holds the job's lease."""
    _lock_or_lose(session, job_id, owner)
    session.add(TrialCheck(job_id=job_id, step=step, epochs=epochs, **values))
    session.add_all(
        MetricPoint(job_id=job_id, name=name, step=step, value=value)
        for name, value in values.items()
    )
    session.commit()


def status_events(session: Session, job_id: str, limit: int = 1000) -> Sequence[JobEvent]:
    """The job's status changes, oldest first: its timeline, without its steps and epochs."""
    return session.scalars(
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.kind == "status")
        .order_by(JobEvent.seq)
        .limit(limit)
    ).all()


def events_after(session: Session, job_id: str, seq: int, limit: int = 1000) -> list[JobEvent]:
    return list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > seq)
            .order_by(JobEvent.seq)
            .limit(limit)
        )
    )


def metric_series(
    session: Session,
    job_id: str,
    name: str,
    max_points: int,
    step_min: int | None = None,
    step_max: int | None = None,
) -> Sequence[Row]:
    """A metric's points from step_min to step_max (default: all), averaged by the database
    into at most max_points step buckets."""
    where = [MetricPoint.job_id == job_id, MetricPoint.name == name]
    if step_min is not None:
        where.append(MetricPoint.step >= step_min)
    if step_max is not None:
        where.append(MetricPoint.step <= step_max)
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
