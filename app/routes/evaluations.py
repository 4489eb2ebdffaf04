"""Evaluations of a model version on new data: asked for here, run by a worker.

The app adds the key check at include_router time (train or deploy); a key evaluates the
versions of names it may read, on datasets it may read.
"""

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from kombu.exceptions import OperationalError
from sqlalchemy.orm import Session

from app.broker import enqueue_evaluation
from app.deps import CeleryDep, CurrentKeyDep, SessionDep
from app.routes.models import NOT_FOUND, model_version
from app.schemas import EvaluationCreate, EvaluationPublic, EvaluationsPublic, error
from app.store import access, datasets, evaluations
from app.store.tables import ApiKey, Dataset, Evaluation, ModelVersion

log = logging.getLogger("trainserve.api")

router = APIRouter(tags=["models"])


@router.post(
    "/models/{model_id}/evaluations",
    status_code=202,
    responses={
        **NOT_FOUND,
        403: error("The dataset is another key's."),
        422: error("The dataset's task, classes or split do not fit the model."),
        503: error("The broker cannot be reached."),
    },
)
def create_evaluation(
    *,
    session: SessionDep,
    celery: CeleryDep,
    key: CurrentKeyDep,
    model_id: str,
    body: EvaluationCreate,
) -> EvaluationPublic:
    """Judge a version on a dataset, in a worker: the report of its served epoch, plus its
    most confidently wrong examples and its throughput there. Poll the evaluation's URL
    until its status is `succeeded` or `failed`."""
    version = model_version(session, model_id, key)
    dataset = _dataset_that_fits(session, body.dataset_id, version, key)
    evaluation = evaluations.add_evaluation(
        session,
        Evaluation(
            version_id=version.id,
            dataset_id=dataset.id,
            split=_split(body.split, dataset),
            api_key_id=key.id if key else None,
        ),
    )
    try:
        enqueue_evaluation(celery, evaluation.id)
    except OperationalError as exc:
        evaluations.end_evaluation(session, evaluation, None, "the broker was unreachable")
        raise HTTPException(503, f"the broker is unreachable ({exc}); try again") from exc
    log.info(
        "evaluation %s: queued, version %s on dataset %s", evaluation.id, version.id, dataset.id
    )
    return EvaluationPublic.model_validate(evaluation)


def _dataset_that_fits(
    session: Session, dataset_id: str, version: ModelVersion, key: ApiKey | None
) -> Dataset:
    dataset = datasets.get_dataset(session, dataset_id)
    if dataset is None:
        raise HTTPException(422, f"dataset_id {dataset_id!r} is not a known dataset")
    if not access.may_read_dataset(session, dataset, key):
        raise HTTPException(403, f"dataset_id {dataset_id!r} is another key's dataset")
    if dataset.task != version.task:
        raise HTTPException(
            422,
            f"dataset {dataset.id} holds {dataset.task} data; model {version.id} is a "
            f"{version.task} model",
        )
    unknown = [name for name in dataset.classes if name not in version.classes]
    if unknown:
        raise HTTPException(
            422,
            f"dataset {dataset.id}'s classes {unknown} are not the model's: it knows "
            f"{version.classes}",
        )
    return dataset


def _split(asked: str, dataset: Dataset) -> str:
    """The split to evaluate: `auto` is the test split where there is one, else all."""
    if asked == "auto":
        return "test" if "test" in dataset.counts else "all"
    if asked != "all" and asked not in dataset.counts:
        raise HTTPException(
            422, f"dataset {dataset.id} has no {asked} split (it has {sorted(dataset.counts)})"
        )
    return asked


@router.get("/models/{model_id}/evaluations", responses=NOT_FOUND)
def list_evaluations(
    *,
    session: SessionDep,
    key: CurrentKeyDep,
    model_id: str,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> EvaluationsPublic:
    """The version's evaluations on new data, newest first."""
    version = model_version(session, model_id, key)
    rows, next_cursor = evaluations.list_evaluations(session, version.id, limit, cursor)
    return EvaluationsPublic(
        items=[EvaluationPublic.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.get("/models/{model_id}/evaluations/{evaluation_id}", responses=NOT_FOUND)
def get_evaluation(
    *, session: SessionDep, key: CurrentKeyDep, model_id: str, evaluation_id: str
) -> EvaluationPublic:
    """One evaluation: its status and, once it succeeded, its report."""
    version = model_version(session, model_id, key)
    evaluation = evaluations.get_evaluation(session, evaluation_id)
    if evaluation is None or evaluation.version_id != version.id:
        raise HTTPException(404, f"model {version.id} has no evaluation {evaluation_id!r}")
    return EvaluationPublic.model_validate(evaluation)
