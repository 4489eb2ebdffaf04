"""A sweep's Optuna study, rebuilt from its trials (app/tuning.py says when and why).

Its own module, imported by app.tuning only when a sweep needs a decision: Optuna's import
costs about a second (8 s on a loaded two-core machine), which a worker's job that is no
trial, and every process start, need not pay.
"""

from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from app.store.sweeps import Trial
from app.store.tables import EndReason, JobStatus, utcnow
from app.sweepspec import CategoricalParam, FloatParam, SweepSpec
from app.tuning import objective_value

optuna.logging.set_verbosity(optuna.logging.WARNING)  # a replay would log every trial again

# Random trials before TPE models the results: a quarter of the sweep, 2 to 10.
TPE_STARTUP_SHARE, TPE_STARTUP_MIN, TPE_STARTUP_MAX = 4, 2, 10
MEDIAN_STARTUP_TRIALS = 3  # trials that must report an epoch before the median rule stops any
SEED_STRIDE = 1_000_003  # a different sampler seed per trial number, the same on every replay


def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    found: dict[str, BaseDistribution] = {}
    for path, param in spec.space.items():
        if isinstance(param, FloatParam):
            found[path] = FloatDistribution(param.low, param.high, log=param.log)
        elif isinstance(param, CategoricalParam):
            found[path] = CategoricalDistribution(param.choices)
        else:
            found[path] = IntDistribution(param.low, param.high, log=param.log, step=param.step)
    return found


def _sampler(spec: SweepSpec, first_number: int) -> optuna.samplers.BaseSampler:
    """Seeded by the sweep's seed and the number of the first trial it will ask: a rebuilt
    sampler asks what one kept in memory would not have, but the same on every replay."""
    seed = (spec.seed * SEED_STRIDE + first_number) % 2**32
    if spec.sampler == "tpe":
        startup = spec.max_trials // TPE_STARTUP_SHARE
        startup = max(TPE_STARTUP_MIN, min(TPE_STARTUP_MAX, startup))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.RandomSampler(seed=seed)  # grid trials never ask it


def _pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """The sweep's rule, its resources counted in checks: 1/checks_per_epoch of an epoch."""
    checks = spec.checks_per_epoch
    rule, factor = spec.pruner.rule, spec.pruner.reduction_factor
    min_checks = spec.min_checks
    if rule == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=min_checks - 1
        )
    if rule == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_checks, reduction_factor=factor
        )
    if rule == "hyperband":
        # Its brackets are sized by the longest trial, else Optuna's estimate from the
        # first trials that end.
        most = spec.most_epochs
        return optuna.pruners.HyperbandPruner(
            min_resource=min_checks,
            max_resource=most * checks if most else "auto",
            reduction_factor=factor,
        )
    return optuna.pruners.NopPruner()


def replay(
    sweep_id: str, spec: SweepSpec, trials: list[Trial]
) -> tuple[optuna.Study, dict[tuple[int, int], bool]]:
    """The sweep's study as its trials made it, and the pruner's decision for each
    (trial number, check) reported: a trial's checks count 1/checks_per_epoch of an epoch
    each, its epochs' ends and the checks partway through them alike."""
    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(),
        sampler=_sampler(spec, len(trials)),
        pruner=_pruner(spec),
        direction="maximize" if spec.objective.maximize else "minimize",
        study_name=sweep_id,  # Hyperband's brackets are a hash of it and the trial number
    )
    space = distributions(spec)
    live: dict[int, optuna.Trial] = {}
    decisions: dict[tuple[int, int], bool] = {}
    for _, _, number, event, payload in sorted(_events(spec, trials), key=_in_order):
        if event == "ask":
            study.enqueue_trial(payload)
            live[number] = study.ask(space)
        elif event == "report":
            check, value = payload
            live[number].report(value, check)
            decisions[number, check] = live[number].should_prune()
        else:
            study.tell(live[number], **payload)
    return study, decisions


def _events(spec: SweepSpec, trials: list[Trial]) -> list[tuple[Any, int, int, str, Any]]:
    """(when, order at the same time, trial number, event, payload) for each ask, report
    and tell. The asks go by trial number, so the study numbers its trials as the sweep
    did."""
    events: list[tuple[Any, int, int, str, Any]] = []
    for trial in trials:
        events.append((trial.created_at, 0, trial.number, "ask", trial.params))
        for check, value, at in trial.reports(spec.checks_per_epoch):
            events.append((at, 1, trial.number, "report", (check, value)))
        if trial.ended:
            events.append(
                (trial.finished_at or utcnow(), 2, trial.number, "tell", _told(spec, trial))
            )
    return events


def _in_order(event: tuple) -> tuple:
    """When, then asks before reports before tells, then by trial: a stable sort keeps a
    trial's epochs in their order."""
    return event[:3]


def _told(spec: SweepSpec, trial: Trial) -> dict[str, Any]:
    value = objective_value(spec, trial)
    if trial.end_reason == EndReason.PRUNED:
        return {"state": TrialState.PRUNED}
    if trial.status != JobStatus.SUCCEEDED or value is None:
        return {"state": TrialState.FAIL}  # failed or cancelled: it tells nothing
    return {"values": value, "state": TrialState.COMPLETE}
