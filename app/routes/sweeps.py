"""Sweeps: a hyper-parameter search whose trials are jobs (app/tuning.py drives it)."""

import hashlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Response
from kombu.exceptions import OperationalError as BrokerUnreachable
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.broker import enqueue_training
from app.deps import CeleryDep, CurrentKeyDep, SessionDep, SettingsDep
from app.quotas import apply_ceilings, check_job_quota, check_storage_quota
from app.recipes import facts_of_dataset
from app.routes.jobs import check_datasets, claim_name, resolved_or_422
from app.schemas import (
    Responses,
    SweepListQuery,
    SweepPublic,
    SweepsPublic,
    SweepSummary,
    TrialPublic,
    error,
)
from app.store import access, sweeps
from app.store.pages import InvalidCursor
from app.store.tables import ApiKey, Sweep, SweepStatus
from app.sweepspec import SweepSpec
from app.tuning import advance_sweep, best_trial, cancel_sweep, deadline_of, objective_value

router = APIRouter(prefix="/sweeps", tags=["sweeps"])
log = logging.getLogger("trainserve.api")

NOT_FOUND: Responses = {404: error("No such sweep.")}


@router.post(
    "",
    status_code=201,
    responses={
        200: {"model": SweepPublic, "description": "This Idempotency-Key's sweep, already stored."},
        403: error("The dataset, or the model name, is another key's."),
        409: error("The Idempotency-Key was used with another body, or storage is used up."),
        422: error("A field of the spec or the space is invalid; the detail names it."),
        429: error("The key has its most jobs (a running sweep counts as one)."),
    },
)
def create_sweep(
    *,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    key: CurrentKeyDep,
    spec: SweepSpec,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(min_length=1, max_length=200, description="Retrying returns the same sweep."),
    ] = None,
) -> SweepPublic:
    """Store a sweep and queue its first trials (up to max_parallel). Its trials are jobs of
    the key's; the sweep counts as one job against the key's quota, whatever its trials."""
    stored = _stored_spec(spec, settings.max_job_run_seconds)
    request_sha256 = hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()
    if idempotency_key and key:
        idempotency_key = f"{key.id}:{idempotency_key}"
    if idempotency_key and (found := _sweep_for_key(session, idempotency_key, request_sha256)):
        response.status_code = 200
        return _public(session, found)
    _check_trials(session, settings, key, SweepSpec.model_validate(stored))
    check_storage_quota(session, key, settings, adding=1, refusal=(409, "a new sweep"))
    claim_name(session, spec.base, key)
    check_job_quota(session, key, settings)
    sweep = Sweep(
        name=spec.base.name or spec.base.task,
        spec=stored,
        api_key_id=key.id if key else None,
        idempotency_key=idempotency_key,
        request_sha256=request_sha256,
        deadline_at=deadline_of(spec),
    )
    try:
        sweeps.add_sweep(session, sweep)
    except IntegrityError:  # the same Idempotency-Key, sent twice at once
        session.rollback()
        if not idempotency_key or not (
            found := _sweep_for_key(session, idempotency_key, request_sha256)
        ):
            raise
        response.status_code = 200
        return _public(session, found)
    log.info("sweep %s: stored, %d trials of %s", sweep.id, spec.max_trials, sweep.name)
    advance_sweep(session, sweep.id, lambda job_id, queue: _send(celery, job_id, queue))
    return _public(session, sweep)


def _stored_spec(spec: SweepSpec, ceiling_seconds: float) -> dict[str, Any]:
    """The spec with its defaults, and the base job as given (so each trial's recipe fills
    what it left out), with the service's time ceiling where it names no time limit."""
    stored = spec.model_dump(mode="json")
    base = spec.base.model_dump(mode="json", exclude_unset=True)
    base.setdefault("limits", {}).setdefault("max_run_seconds", ceiling_seconds)
    return stored | {"base": base}


def _check_trials(session: Session, settings, key: ApiKey | None, spec: SweepSpec) -> None:
    """Each end of each searched range and each choice, as a job: its datasets, its
    resolved spec and the service's ceilings (a 422 naming the field when one is over)."""
    base = spec.base
    facts = facts_of_dataset(check_datasets(session, base, key), base.validation)
    for path, param in spec.space.items():
        for value in param.corners():
            trial = spec.trial_spec({path: value})
            try:
                apply_ceilings(resolved_or_422(trial, facts), facts, settings)
            except HTTPException as exc:
                raise HTTPException(
                    exc.status_code, f"space[{path!r}] = {value!r}: {exc.detail}"
                ) from exc


def _sweep_for_key(session: Session, key: str, request_sha256: str) -> Sweep | None:
    sweep = sweeps.find_sweep_by_idempotency_key(session, key)
    if sweep is not None and sweep.request_sha256 != request_sha256:
        raise HTTPException(
            409, f"this Idempotency-Key was used for sweep {sweep.id} with another body"
        )
    return sweep


def _send(celery, job_id: str, queue: str) -> None:
    try:
        enqueue_training(celery, job_id, queue)
    except BrokerUnreachable as exc:  # stored is accepted: the sweeper sends it later
        log.warning("job %s: stored, but the broker is unreachable (%s)", job_id, exc)


@router.get("")
def list_sweeps(
    *, session: SessionDep, key: CurrentKeyDep, query: Annotated[SweepListQuery, Query()]
) -> SweepsPublic:
    """The key's sweeps (every sweep, for admin), newest first."""
    try:
        rows, next_cursor = sweeps.list_sweeps(
            session, query.limit, query.cursor, access.restricted_to(key)
        )
    except InvalidCursor as exc:
        raise HTTPException(422, str(exc)) from exc
    return SweepsPublic(items=[SweepSummary.of(row) for row in rows], next_cursor=next_cursor)


def _existing_sweep(session: Session, sweep_id: str, key: ApiKey | None) -> Sweep:
    """The sweep if it is the key's (any, for admin); another key's is answered as unknown."""
    sweep = sweeps.get_sweep(session, sweep_id)
    if sweep is None or not access.owns(key, sweep.api_key_id):
        raise HTTPException(404, f"no sweep with id {sweep_id!r}")
    return sweep


@router.get("/{sweep_id}", responses=NOT_FOUND)
def get_sweep(*, session: SessionDep, key: CurrentKeyDep, sweep_id: str) -> SweepPublic:
    """The sweep's trials (parameters, status, objective, the epoch a pruned one stopped
    at) and its best trial so far."""
    return _public(session, _existing_sweep(session, sweep_id, key))


@router.post("/{sweep_id}/cancel", responses=NOT_FOUND | {409: error("The sweep has ended.")})
def cancel(*, session: SessionDep, key: CurrentKeyDep, sweep_id: str) -> SweepPublic:
    """End the sweep: no trial starts after this, its queued trials are cancelled and its
    running ones stop at their next step. Repeating it is harmless."""
    sweep = _existing_sweep(session, sweep_id, key)
    if sweep.status in (SweepStatus.SUCCEEDED, SweepStatus.FAILED):
        raise HTTPException(409, f"sweep {sweep.id} has already ended: {sweep.status}")
    cancel_sweep(session, sweep.id)
    log.info("sweep %s: cancelled", sweep.id)
    session.expire_all()
    return _public(session, _existing_sweep(session, sweep_id, key))


def _public(session: Session, sweep: Sweep) -> SweepPublic:
    spec = SweepSpec.model_validate(sweep.spec)
    trials = sweeps.trials_of(session, sweep.id, spec.objective.metric)
    public = {trial.number: TrialPublic.of(trial, objective_value(spec, trial)) for trial in trials}
    best = best_trial(spec, trials)
    return SweepPublic.model_validate(
        SweepSummary.of(sweep).model_dump()
        | {
            "spec": sweep.spec,
            "trials_planned": spec.trials_planned,
            "trials": list(public.values()),
            "best_trial": public[best.number] if best else None,
            "epochs_trained": sum(trial.epochs_trained for trial in trials),
        }
    )
