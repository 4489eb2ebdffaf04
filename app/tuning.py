"""A sweep driven by the database: Optuna's samplers and pruners over a study rebuilt from
the sweep's trials each time a decision is needed.

Nothing of a sweep lives in a process's memory. Its trials are jobs (with their number and
parameters), and their checks are the job's epoch records and its trial checks (partway
through an epoch); to decide, a driver replays them through Optuna's ask-and-tell
interface, in the order they happened, into an in-memory study: each trial asked with its
recorded parameters (enqueue_trial), each check's value reported (report, should_prune:
what the pruner keeps of it, ASHA's rungs say, is rebuilt the same way), each ended trial
told. Then it asks the next trials, or reads the pruner's decision for a trial's latest
check. A replay costs milliseconds for a sweep
of 100 trials; Optuna's own storage tables are not used.

Who drives: `advance_sweep` runs under the sweep's row lock, so the API (when a sweep is
stored), a worker (when a trial ends: the next one is queued at once) and the API's
sweeper (every few seconds: after a restart, a lost message, a killed worker) can all
call it and each trial is asked exactly once. The pruner runs in the worker after each
of a trial's checks (`should_prune`); the decision is a function of what the database
holds, so a resumed attempt that asks again gets it again.
"""

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.broker import QUEUE, QUEUE_OF_DEVICE
from app.recipes import facts_of_dataset, resolve
from app.store import datasets, sweeps, versions
from app.store.jobs import get_job, stage_job
from app.store.lifecycle import request_cancel
from app.store.sweeps import Trial
from app.store.tables import Job, Sweep, SweepStatus, utcnow
from app.sweepspec import SweepSpec

log = logging.getLogger("trainserve.sweeps")

BEST = "best"  # the alias that follows a sweep's best trial: <name>@best


def objective_value(spec: SweepSpec, trial: Trial) -> float | None:
    """The trial's objective: the best of its epochs' values (an epoch's end is what a
    model is registered from; its checks partway through judge it, but are no model)."""
    return spec.objective.best([value for _, value, _ in trial.values])


def should_prune(session: Session, job_id: str) -> bool:
    """Whether the sweep's rule stops this trial after its latest recorded check (an epoch's
    end, or a validation partway through one). False for a job that is no trial, a rule of
    none, or a trial with nothing recorded yet."""
    job = get_job(session, job_id)
    sweep = sweeps.get_sweep(session, job.sweep_id) if job and job.sweep_id else None
    if sweep is None:
        return False
    spec = SweepSpec.model_validate(sweep.spec)
    if spec.pruner.rule == "none":
        return False
    trials = sweeps.trials_of(session, sweep.id, spec.objective.metric)
    session.commit()  # end the read: the worker's next writes take their own transactions
    trial = next((trial for trial in trials if trial.job_id == job_id), None)
    reports = trial.reports(spec.checks_per_epoch) if trial else []
    if trial is None or not reports:
        return False
    from app import studies  # only trials pay Optuna's import (app/studies.py)

    _, decisions = studies.replay(sweep.id, spec, trials)
    pruned = decisions[trial.number, reports[-1][0]]
    if pruned:
        log.info(
            "job %s: trial %d of sweep %s pruned after %g epochs",
            job_id,
            trial.number,
            sweep.id,
            trial.epochs_trained,
        )
    return pruned


def sweep_spec_of(session: Session, job: Job) -> SweepSpec | None:
    """The spec of the sweep the job is a trial of; None for a job that is no trial."""
    sweep = sweeps.get_sweep(session, job.sweep_id) if job.sweep_id else None
    return SweepSpec.model_validate(sweep.spec) if sweep else None


Send = Callable[[str, str], None]  # a trial's job id and the Celery queue it goes to


def advance_sweep(session: Session, sweep_id: str, send: Send) -> list[str]:
    """Move the sweep on: follow its best trial with the `best` alias, queue its next
    trials up to max_parallel, cancel what runs past its time budget, end it when its
    trials are done. Returns the ids of the trials it queued (sent with `send` once
    committed; a message that does not get through is sent again by the sweeper)."""
    sweep = sweeps.lock_sweep(session, sweep_id)
    if sweep is None or sweep.status != SweepStatus.RUNNING:
        session.rollback()
        return []
    spec = SweepSpec.model_validate(sweep.spec)
    trials = sweeps.trials_of(session, sweep.id, spec.objective.metric)
    _follow_best(session, sweep, spec, trials)
    out_of_time = sweep.deadline_at is not None and utcnow() >= sweep.deadline_at
    queued: list[tuple[str, str]] = []
    try:
        if not out_of_time:
            queued = _queue_trials(session, sweep, spec, trials)
        open_trials = [trial for trial in trials if not trial.ended]
        if not open_trials and not queued and (out_of_time or len(trials) >= spec.trials_planned):
            _end(session, sweep, trials)
        session.commit()
    except ValueError as exc:  # a trial's spec, resolved, is invalid; or its data is gone
        session.rollback()
        return _fail(session, sweep_id, f"a trial could not be made: {exc}")
    except IntegrityError:
        # SQLite has no row lock: another driver stored these trial numbers first. What it
        # asked stands; this one asks nothing.
        session.rollback()
        log.info("sweep %s: another driver queued its next trials first", sweep_id)
        return []
    if out_of_time:
        for trial in open_trials:
            request_cancel(session, trial.job_id)
    for job_id, queue in queued:
        send(job_id, queue)
    return [job_id for job_id, _ in queued]


def _queue_trials(
    session: Session, sweep: Sweep, spec: SweepSpec, trials: list[Trial]
) -> list[tuple[str, str]]:
    """The trials it queued, each with its queue: cuda's where the base spec asks for a GPU,
    else the CPU queue (a sweep's `auto` is not routed by the workers seen)."""
    running = sum(not trial.ended for trial in trials)
    wanted = min(spec.max_parallel - running, spec.trials_planned - len(trials))
    if wanted <= 0:
        return []
    numbers = range(len(trials), len(trials) + wanted)
    queued = []
    for number, params in zip(numbers, _next_params(sweep.id, spec, trials, wanted), strict=True):
        trial_spec, sources, epochs = _resolved_trial(session, spec, params)
        queue = QUEUE_OF_DEVICE.get(trial_spec.resources.device, QUEUE)
        fields = _trial_fields(sweep, number, params)
        job = stage_job(session, trial_spec, sources, epochs, queue=queue, **fields)
        queued.append((job.id, queue))
        log.info("sweep %s: trial %d queued as job %s: %s", sweep.id, number, job.id, params)
    return queued


def _next_params(
    sweep_id: str, spec: SweepSpec, trials: list[Trial], count: int
) -> list[dict[str, Any]]:
    if spec.sampler == "grid":
        return spec.grid()[len(trials) : len(trials) + count]
    from app import studies  # only sweeps pay Optuna's import (app/studies.py)

    study, _ = studies.replay(sweep_id, spec, trials)
    space = studies.distributions(spec)
    # Asked and left running: TPE's constant liar counts them, so parallel asks spread out.
    return [study.ask(space).params for _ in range(count)]


def _resolved_trial(session: Session, spec: SweepSpec, params: dict[str, Any]):
    """The trial's job spec with what it left out filled, its sources and planned epochs."""
    trial_spec = spec.trial_spec(params)
    dataset = datasets.get_dataset(session, trial_spec.dataset_id)
    if dataset is None:
        raise ValueError(f"dataset {trial_spec.dataset_id} no longer exists")
    resolved = resolve(trial_spec, facts_of_dataset(dataset, trial_spec.validation))
    sources = resolved.sources | {path: "sweep: searched" for path in params}
    return resolved.spec, sources, resolved.planned_epochs


def _trial_fields(sweep: Sweep, number: int, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "sweep_id": sweep.id,
        "trial_number": number,
        "trial_params": params,
        "api_key_id": sweep.api_key_id,
        # One job per trial, whoever asks: the unique (sweep, number) would refuse a second.
        "idempotency_key": f"sweep:{sweep.id}:{number}",
    }


def best_trial(spec: SweepSpec, trials: list[Trial]) -> Trial | None:
    """The trial with the best objective among those whose model is registered."""
    best: tuple[float, Trial] | None = None
    for trial in trials:
        value = objective_value(spec, trial)
        if trial.model_id is None or value is None:
            continue
        if best is None or spec.objective.better(value, best[0]):
            best = (value, trial)
    return best[1] if best else None


def _follow_best(session: Session, sweep: Sweep, spec: SweepSpec, trials: list[Trial]) -> None:
    """Point <name>@best at the best trial's model, when it changed."""
    best = best_trial(spec, trials)
    if best is None or best.model_id is None or best.job_id == sweep.best_job_id:
        return
    sweep.best_job_id = best.job_id
    versions.stage_alias_move(session, sweep.name, BEST, best.model_id, action="sweep_best")
    log.info("sweep %s: best trial now %d (job %s)", sweep.id, best.number, best.job_id)


def _end(session: Session, sweep: Sweep, trials: list[Trial]) -> None:
    if sweep.best_job_id is None:
        sweeps.end_sweep(session, sweep.id, SweepStatus.FAILED, "no trial produced a model")
    else:
        sweeps.end_sweep(session, sweep.id, SweepStatus.SUCCEEDED)
    log.info("sweep %s: ended after %d trials", sweep.id, len(trials))


def _fail(session: Session, sweep_id: str, error: str) -> list[str]:
    sweeps.lock_sweep(session, sweep_id)
    sweeps.end_sweep(session, sweep_id, SweepStatus.FAILED, error)
    session.commit()
    for job_id in sweeps.open_trial_ids(session, sweep_id):
        request_cancel(session, job_id)
    log.warning("sweep %s: failed: %s", sweep_id, error)
    return []


def cancel_sweep(session: Session, sweep_id: str) -> bool:
    """End a running sweep as cancelled and cancel its queued and running trials. False if
    it had ended already (its open trials, if any, are cancelled all the same)."""
    sweeps.lock_sweep(session, sweep_id)
    cancelled = sweeps.end_sweep(session, sweep_id, SweepStatus.CANCELLED)
    session.commit()
    for job_id in sweeps.open_trial_ids(session, sweep_id):
        request_cancel(session, job_id)
    return cancelled


def deadline_of(spec: SweepSpec):
    return utcnow() + timedelta(seconds=spec.max_seconds) if spec.max_seconds else None


def advance_running_sweeps(session: Session, send: Send) -> None:
    """The sweeper's pass: every running sweep moved on (each under its own lock)."""
    for sweep_id in sweeps.running_sweep_ids(session):
        advance_sweep(session, sweep_id, send)
