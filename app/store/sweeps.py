"""Sweeps and their trials: store one, lock one to drive it, read its trials with their
per-epoch metrics, list them, end them."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.store.pages import page
from app.store.tables import (
    ENDED,
    EpochMetrics,
    Job,
    ModelVersion,
    Sweep,
    SweepStatus,
    TrialCheck,
    is_id,
    utcnow,
)
from app.sweepspec import CHECKED_METRICS


@dataclass
class Trial:
    """A trial as the sweep's driver reads it: the job's state and its epochs' values of
    the sweep's objective metric, with when each was recorded."""

    job_id: str
    number: int
    params: dict[str, Any]
    status: str
    end_reason: str | None
    epoch: int
    model_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    values: list[tuple[int, float, datetime]] = field(default_factory=list)
    # Its validations partway through an epoch: (epochs trained, value, when).
    checks: list[tuple[float, float, datetime]] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def epochs_trained(self) -> float:
        """Its epochs, with the part of one it trained up to its last check."""
        return max([float(self.epoch), *(epochs for epochs, _, _ in self.checks)])

    def reports(self, checks_per_epoch: int) -> list[tuple[int, float, datetime]]:
        """What its sweep's rule judges, in order: (check number, value, when), each check
        1/checks_per_epoch of an epoch; an epoch's end is check epoch * checks_per_epoch."""
        ends = [(epoch * checks_per_epoch, value, at) for epoch, value, at in self.values]
        partway = [
            (round(epochs * checks_per_epoch), value, at) for epochs, value, at in self.checks
        ]
        return sorted(ends + partway, key=lambda report: report[0])


def add_sweep(session: Session, sweep: Sweep) -> Sweep:
    session.add(sweep)
    session.commit()
    return sweep


def get_sweep(session: Session, sweep_id: str) -> Sweep | None:
    return session.get(Sweep, sweep_id) if is_id(sweep_id) else None


def lock_sweep(session: Session, sweep_id: str) -> Sweep | None:
    """The sweep, its row locked until the caller commits: one driver at a time decides
    what its next trials are, so two (a worker and the API's sweeper) never ask twice."""
    if not is_id(sweep_id):
        return None
    session.expire_all()
    return session.get(Sweep, sweep_id, with_for_update=True, populate_existing=True)


def find_sweep_by_idempotency_key(session: Session, key: str) -> Sweep | None:
    return session.scalar(select(Sweep).where(Sweep.idempotency_key == key))


def list_sweeps(session: Session, limit: int, cursor: str | None, owner: str | None):
    """A page of sweeps (of the owner's key, if given), newest first, and the next cursor."""
    filters = () if owner is None else (Sweep.api_key_id == owner,)
    return page(session, Sweep, limit, cursor, *filters)


def running_sweep_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Sweep.id).where(Sweep.status == SweepStatus.RUNNING)))


def trials_of(session: Session, sweep_id: str, metric: str) -> list[Trial]:
    """The sweep's trials in number order, each with its epochs' values of `metric`."""
    rows = session.execute(
        select(
            Job.id,
            Job.trial_number,
            Job.trial_params,
            Job.status,
            Job.end_reason,
            Job.epoch,
            ModelVersion.id.label("model_id"),
            Job.created_at,
            Job.started_at,
            Job.finished_at,
        )
        .outerjoin(ModelVersion, ModelVersion.job_id == Job.id)
        .where(Job.sweep_id == sweep_id)
        .order_by(Job.trial_number)
    ).all()
    trials = {
        row.id: Trial(
            job_id=row.id,
            number=row.trial_number,
            params=row.trial_params or {},
            status=row.status,
            end_reason=row.end_reason,
            epoch=row.epoch,
            model_id=row.model_id,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )
        for row in rows
    }
    for job_id, epoch, value, at in _recorded(session, sweep_id, metric, EpochMetrics.epoch):
        trials[job_id].values.append((epoch, value, at))
    if metric in CHECKED_METRICS:
        for job_id, epochs, value, at in _recorded(session, sweep_id, metric, TrialCheck.epochs):
            trials[job_id].checks.append((epochs, value, at))
    return list(trials.values())


def _recorded(session: Session, sweep_id: str, metric: str, progress: Any):
    """(job id, progress, value of `metric`, when) of each row of the sweep's trials in the
    table of `progress` (an epoch's or a check's), each trial's in the order trained."""
    table = progress.class_
    return session.execute(
        select(table.job_id, progress, getattr(table, metric))
        .add_columns(table.created_at)
        .join(Job, Job.id == table.job_id)
        .where(Job.sweep_id == sweep_id)
        .order_by(table.job_id, progress)
    )


def end_sweep(
    session: Session, sweep_id: str, status: SweepStatus, error: str | None = None
) -> bool:
    """End a running sweep; False if it had ended already. The caller commits."""
    ended = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status == SweepStatus.RUNNING)
        .values(status=status, error=error, finished_at=utcnow())
        .returning(Sweep.id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    return ended is not None


def open_trial_ids(session: Session, sweep_id: str) -> Sequence[str]:
    return session.scalars(
        select(Job.id).where(Job.sweep_id == sweep_id, Job.status.notin_(ENDED))
    ).all()
