"""Evaluations of a model version on new data: asked for by the API, run by a worker."""

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.store.pages import page
from app.store.tables import Evaluation, EvaluationStatus, is_id, utcnow


def add_evaluation(session: Session, evaluation: Evaluation) -> Evaluation:
    session.add(evaluation)
    session.commit()
    return evaluation


def get_evaluation(session: Session, evaluation_id: str) -> Evaluation | None:
    return session.get(Evaluation, evaluation_id) if is_id(evaluation_id) else None


def list_evaluations(session: Session, version_id: str, limit: int, cursor: str | None):
    """A page of the version's evaluations, newest first, and the next cursor."""
    return page(session, Evaluation, limit, cursor, Evaluation.version_id == version_id)


def claim_evaluation(session: Session, evaluation_id: str) -> Evaluation | None:
    """The evaluation, now running, if it was queued; None if another worker took it (a
    message delivered twice runs it once)."""
    claimed = session.execute(
        update(Evaluation)
        .where(Evaluation.id == evaluation_id, Evaluation.status == EvaluationStatus.QUEUED)
        .values(status=EvaluationStatus.RUNNING, started_at=utcnow())
        .returning(Evaluation.id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    session.commit()
    return session.get(Evaluation, evaluation_id) if claimed is not None else None


def end_evaluation(
    session: Session, evaluation: Evaluation, report: dict | None, error: str | None = None
) -> None:
    """Succeeded with its report, or failed with the error a person reads."""
    evaluation.status = EvaluationStatus.FAILED if error else EvaluationStatus.SUCCEEDED
    evaluation.report, evaluation.error, evaluation.finished_at = report, error, utcnow()
    session.commit()


def queued_evaluation_ids(session: Session, queued_before: datetime, limit: int) -> list[str]:
    """Evaluations still queued that were asked for before the time, oldest first."""
    return list(
        session.scalars(
            select(Evaluation.id)
            .where(*_queued_before(queued_before))
            .order_by(Evaluation.created_at)
            .limit(limit)
        )
    )


def fail_stalled_evaluations(session: Session, started_before: datetime, error: str) -> list[str]:
    """End as failed, with `error`, the evaluations still running that started before
    `started_before`: an evaluation renews no lease, so one whose worker died would run
    forever. Returns their ids."""
    failed = session.scalars(
        update(Evaluation)
        .where(
            Evaluation.status == EvaluationStatus.RUNNING, Evaluation.started_at < started_before
        )
        .values(status=EvaluationStatus.FAILED, error=error, finished_at=utcnow())
        .returning(Evaluation.id)
        .execution_options(synchronize_session=False)
    ).all()
    session.commit()
    return list(failed)


def count_queued_evaluations(session: Session, queued_before: datetime) -> int:
    return session.scalar(select(func.count()).where(*_queued_before(queued_before))) or 0


def _queued_before(moment: datetime) -> tuple:
    return (Evaluation.status == EvaluationStatus.QUEUED, Evaluation.created_at < moment)
