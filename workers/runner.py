"""One attempt at a job in the worker: claim, (resume,) train, checkpoint, register the model."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from sqlalchemy.orm import Session

from app.broker import QUEUE
from app.config import Settings, get_settings
from app.jobspec import EarlyStopping, JobSpec
from app.recipes import RECIPES, filled
from app.store.artefacts import ArtefactStore, CacheDiskFull, get_store, load, save
from app.store.datasets import get_dataset
from app.store.db import get_session_factory
from app.store.jobs import get_job, queued_job_ids
from app.store.lifecycle import (
    LeaseLost,
    claim_job,
    confirm_cancelled,
    end_pruned_before_first_epoch,
    fail_job,
    finish_job,
    hand_back_job,
    lease_held,
    plan_epochs,
    retry_or_fail,
    set_device,
)
from app.store.outage import first_line
from app.store.records import forget_progress_after, record_check, record_epoch, resume_job
from app.store.storage import job_prefix
from app.store.tables import EndReason, Job, JobStatus, ModelVersion
from app.sweepspec import SweepSpec
from app.tuning import Send, advance_sweep, should_prune, sweep_spec_of
from models.checkpoint import make_checkpoint
from models.data import DatasetError, LabelledData, data_from_state, with_test_split
from workers.budget import epochs_after_first, epochs_for_budget
from workers.distributed import GroupStep, Ranks
from workers.evaluation import served_epoch_report
from workers.group import RankGroupFailed, train_in_group
from workers.lease import (
    DatabaseGone,
    JobCancelled,
    Lease,
    LeaseCheck,
    OutageWait,
    WorkerStopping,
    worker_name,
)
from workers.progress import StepReporter, TimeLimitReached
from workers.recipe import TrainingRun, prepare_run, resolve_device
from workers.resources import ResourceSampler
from workers.training import EpochResult, epochs_without_improvement

log = logging.getLogger("trainserve.worker")


class TrialPruned(Exception):
    """The sweep's rule stopped the trial at a check partway through an epoch."""


class EpochRecorder:
    """After each epoch: store the last checkpoint (to resume), the best one (to serve) when
    it improved, then record the metrics with the checkpoints' keys and sha256. Each object
    is named by the job, the attempt and the epoch, and counts only once the epoch's row
    names it, so a resumed attempt redoes an epoch whose record is missing. Nothing is
    stored once the lease is another's (asked of the database before the upload, and the
    row's write fenced by it), and every database write waits out an outage (`database`).
    Returns True when early stopping says to stop."""

    def __init__(
        self,
        session: Session,
        job: Job,
        owner: str,
        run: TrainingRun,
        store: ArtefactStore,
        early_stopping: EarlyStopping | None,
        database: OutageWait,
        writes: bool = True,
    ):
        self.session, self.job_id, self.owner, self.run = session, job.id, owner, run
        self.database = database
        self.attempt, self.store = job.attempt, store
        self.early_stopping = early_stopping
        # False on the ranks of a group but rank 0: they keep the history, to stop early
        # when rank 0 does (every rank sees the same epoch results), and write nothing.
        self.writes = writes
        self.history = [_epoch_result(row) for row in job.history]  # earlier attempts' epochs
        self.best = max(self.history, key=lambda r: r.val_accuracy, default=None)
        self.last_checkpoint = Stored.of(job.last_checkpoint, job.last_checkpoint_sha256)
        self.best_checkpoint = Stored.of(job.best_checkpoint, job.best_checkpoint_sha256)
        self.steps: StepReporter | GroupStep | None = None
        self.stopped_early = False
        self.is_trial = job.sweep_id is not None
        self.pruned = False  # a sweep's trial stopped by the sweep's rule

    @property
    def stopping(self) -> bool:
        return self.stopped_early or self.pruned

    def __call__(self, result: EpochResult) -> bool:
        if self.steps is None:
            raise RuntimeError("the recorder's StepReporter is set before training starts")
        self.database(self.steps.flush)
        checkpoint = make_checkpoint(
            **self.run.description,
            network=self.run.network,
            epoch=result.epoch,
            metrics=result.as_dict(),
        )
        last = None
        if self.writes:
            self._still_held()
            last = self._store(result.epoch, "last", checkpoint | self.run.resume_state())
        return self.record(result, checkpoint, last)

    def _still_held(self) -> None:
        """Before an upload: a worker frozen past its lease and thawed has not heard yet."""
        if not self.database(lambda: lease_held(self.session, self.job_id, self.owner)):
            raise LeaseLost(self.job_id)

    def _store(self, epoch: int, kind: str, checkpoint: dict) -> "Stored":
        key = f"{job_prefix(self.job_id)}a{self.attempt}-e{epoch}-{kind}.pt"
        return Stored(key, save(self.store, key, checkpoint))

    def record(self, result: EpochResult, checkpoint: dict, last: "Stored | None") -> bool:
        is_best = self.best is None or result.val_accuracy > self.best.val_accuracy
        if self.writes and last is not None:
            best = self._store(result.epoch, "best", checkpoint) if is_best else None
            step = result.epoch * len(self.run.train)
            checkpoints = {"last_checkpoint": last.key, "last_checkpoint_sha256": last.sha256}
            if best:
                checkpoints |= {
                    "best_checkpoint": best.key,
                    "best_checkpoint_sha256": best.sha256,
                }
            try:
                self.database(
                    lambda: record_epoch(
                        self.session,
                        self.job_id,
                        self.owner,
                        result.as_dict(),
                        step,
                        is_best,
                        checkpoints,
                    )
                )
            except LeaseLost:
                # Taken over since the check: no row names them, so they never count.
                for stored in (last, best):
                    if stored is not None:
                        self.store.delete(stored.key)
                raise
            # The row now names the new objects: the ones they replace count no more.
            self._forget(self.last_checkpoint, last)
            self.last_checkpoint = last
            if best:
                self._forget(self.best_checkpoint, best)
                self.best_checkpoint = best
        if is_best:
            self.best = result
        self.history.append(result)
        if self.writes:
            self._log(result)
        self.stopped_early = _should_stop(self.early_stopping, self.history)
        self.judge_trial()
        return self.stopping

    def _log(self, result: EpochResult) -> None:
        log.info(
            "job %s epoch %d train_loss=%.4f val_loss=%.4f val_accuracy=%.4f %.0f samples/s",
            self.job_id,
            result.epoch,
            result.train_loss,
            result.val_loss,
            result.val_accuracy,
            result.samples_per_second,
        )

    def judge_trial(self) -> None:
        """A sweep's trial with epochs left asks the sweep's rule whether to go on after its
        latest one (after its last, it has completed). The answer is read from the
        database, so a resumed attempt gets it again."""
        if self.is_trial and self.history and self.history[-1].epoch < self.run.epochs:
            self.pruned = self.database(lambda: should_prune(self.session, self.job_id))

    def check_partway(self, step: int) -> None:
        """A trial at one of its checks partway through an epoch: validate, record it, and
        ask the sweep's rule; TrialPruned if the rule stops it here."""
        val_loss, val_accuracy = self.run.validate_partway()
        epochs = step / len(self.run.train)
        values = {"val_loss": val_loss, "val_accuracy": val_accuracy}
        self.database(
            lambda: record_check(self.session, self.job_id, self.owner, step, epochs, values)
        )
        log.info(
            "job %s: check after %.2f epochs val_loss=%.4f val_accuracy=%.4f",
            self.job_id,
            epochs,
            val_loss,
            val_accuracy,
        )
        self.pruned = self.database(lambda: should_prune(self.session, self.job_id))
        if self.pruned:
            raise TrialPruned(self.job_id)

    def _forget(self, replaced: "Stored | None", by: "Stored") -> None:
        if replaced is not None and replaced.key != by.key:
            self.store.delete(replaced.key)


@dataclass(frozen=True)
class Stored:
    """An object in the artefact store as a row names it."""

    key: str
    sha256: str

    @classmethod
    def of(cls, key: str | None, sha256: str | None) -> "Stored | None":
        return cls(key, sha256) if key and sha256 else None


class PartwayChecks:
    """The step callback of a trial its sweep judges partway through epochs: after the step
    at each 1/checks_per_epoch of an epoch (its end is judged on the epoch's own
    validation) where the sweep's rule can stop it, the recorder checks the trial.
    `on_step` is called first, for every step."""

    def __init__(
        self,
        on_step: Callable[[torch.Tensor], None],
        recorder: EpochRecorder,
        sweep: SweepSpec,
        first_step: int,
    ):
        self.on_step, self.recorder, self.judges_at = on_step, recorder, sweep.judges_at
        self.checks, self.batches = sweep.checks_per_epoch, len(recorder.run.train)
        self.step = first_step
        # Check k of an epoch comes after this many of its steps (an epoch too short for
        # one has none).
        offsets = {round(k * self.batches / self.checks): k for k in range(1, self.checks)}
        self.check_after = {step: k for step, k in offsets.items() if 0 < step < self.batches}

    def __call__(self, loss: torch.Tensor) -> None:
        self.on_step(loss)
        self.step += 1
        epochs_done, within = divmod(self.step - 1, self.batches)
        k = self.check_after.get(within + 1)
        if k is not None and self.judges_at(epochs_done * self.checks + k):
            self.recorder.check_partway(self.step)


def _epoch_result(row) -> EpochResult:
    return EpochResult(**{field.name: getattr(row, field.name) for field in fields(EpochResult)})


def _should_stop(rule: EarlyStopping | None, history: list[EpochResult]) -> bool:
    if rule is None:
        return False
    values = [getattr(result, rule.monitor) for result in history]
    higher_is_better = rule.monitor.endswith("accuracy")
    return epochs_without_improvement(values, higher_is_better, rule.min_delta) >= rule.patience


def run_job(
    job_id: str, send: Send | None = None, queue: str = QUEUE, worker: str | None = None
) -> None:
    """Run the job the message names, or else the oldest queued one of `queue` (the queue
    the message came from): a message only says that there is work, so a lost or stale
    message never strands a job. After a sweep's trial, the sweep's next trials are queued
    at once and handed to `send` (the task's broker); without one, the API's sweeper sends
    them. `worker`: the Celery node name, for GET /workers."""
    settings = get_settings()
    owner = worker_name()
    with get_session_factory()() as session:
        job = _claim(session, job_id, owner, settings, queue, worker)
        if job is None:
            log.info("no queued job to run (message for %s)", job_id)
            return
        log.info("job %s: attempt %d of %d by %s", job.id, job.attempt, job.max_attempts, owner)
        sweep_id = job.sweep_id
        _attempt(session, job, owner, settings)
        if sweep_id is not None:
            # Now, not at the sweeper's next pass: the time from a trial's end to the next
            # one's start is the sweep's overhead.
            advance_sweep(session, sweep_id, send or (lambda _job, _queue: None))


def _claim(
    session: Session, job_id: str, owner: str, settings: Settings, queue: str, worker: str | None
) -> Job | None:
    for candidate in [job_id, *queued_job_ids(session, limit=20, queue=queue)]:
        if claim_job(session, candidate, owner, settings.lease_seconds, queue, worker):
            return get_job(session, candidate)
    return None


def _attempt(session: Session, job: Job, owner: str, settings: Settings) -> None:
    """Train while the lease's heartbeat runs; write the outcome once it has stopped, so
    that no beat lands after the final commit and reports the lease it gave up as lost."""
    ranks = JobSpec.model_validate(job.spec).resources.ranks
    train = train_job if ranks == 1 else train_in_group  # several: ranks of torch's launcher
    # This attempt's number: `job` is read again after a rollback, and then says the
    # attempt of whoever took the job over.
    attempt = job.attempt
    try:
        with Lease(job.id, owner, settings) as lease:
            model, reason = train(session, job, owner, lease, settings)
        if model is None:  # only a group's other ranks have none, and they never get here
            raise RuntimeError(f"job {job.id}: training ended without a model")
        # No heartbeat now, but no one can take the job while the database is down.
        OutageWait(job.id, session, lease, settings)(
            lambda: _finish(session, job, owner, model, reason)
        )
    except JobCancelled:
        confirm_cancelled(session, job.id, owner)
        log.info("job %s: cancelled", job.id)
    except LeaseLost:
        log.warning(
            "job %s: attempt %d stops, writing nothing more: its lease was taken over "
            "(the worker was out of touch for longer than the lease)",
            job.id,
            attempt,
        )
    except DatabaseGone as exc:
        log.warning(
            "job %s: attempt %d stops: the database was unreachable for %g s "
            "(TRAINSERVE_DATABASE_WAIT_SECONDS); once it is back the job is re-queued and "
            "resumes from its last checkpoint: %s",
            job.id,
            attempt,
            settings.database_wait_seconds,
            first_line(exc),
        )
    except TrialPruned:  # partway through its first epoch, before any model
        end_pruned_before_first_epoch(session, job.id, owner)
        log.info("job %s: pruned before its first epoch ended: no model", job.id)
    except WorkerStopping:
        hand_back_job(session, job.id, owner)
        log.info("job %s: handed back to the queue, the worker is stopping", job.id)
    except TimeLimitReached:  # before the first epoch ended: there is nothing to serve
        error = "limits.max_run_seconds ran out before the first epoch ended"
        fail_job(session, job.id, owner, error, EndReason.TIME_LIMIT)
    except DatasetError as exc:
        log.info("job %s: failed: %s", job.id, exc)
        fail_job(session, job.id, owner, str(exc), EndReason.INVALID)
    # A rank died or crashed (its own log line said why), or this machine's cache disk is
    # full: a later try, or another worker, may get through.
    except (RankGroupFailed, CacheDiskFull) as exc:
        log.warning("job %s: %s", job.id, exc)
        if retry_or_fail(session, job, owner, str(exc)):
            log.info("job %s: re-queued for attempt %d", job.id, job.attempt + 1)
    except torch.OutOfMemoryError:
        # The spec asks for more memory than the device has: another attempt would run out
        # the same way, so it is the job's error, not an infrastructure failure to retry.
        error = _out_of_memory_error(job)
        log.warning("job %s: failed: %s", job.id, error)
        fail_job(session, job.id, owner, error, EndReason.OUT_OF_MEMORY)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the next job in this process what this one held
    except Exception as exc:
        log.exception("job %s: crashed", job.id)
        # The log has the whole traceback; the job keeps the message's first line (a database
        # error's text goes on with the SQL statement and its parameters).
        error = f"training crashed: {type(exc).__name__}: {first_line(exc)}"
        if retry_or_fail(session, job, owner, error):
            log.info("job %s: re-queued for attempt %d", job.id, job.attempt + 1)


def _device_of(spec: JobSpec) -> str:
    """The torch device: the spec's own (cuda:1), else what routed the job (cuda, cpu)."""
    return spec.device if spec.device != "auto" else spec.resources.device


def _out_of_memory_error(job: Job) -> str:
    batch_size = job.spec["hyperparameters"].get("batch_size")
    return (
        f"the {job.device or 'training device'}'s memory ran out (CUDA out of memory) at "
        f"batch_size {batch_size}: send a smaller hyperparameters.batch_size (say "
        f"{max(1, (batch_size or 2) // 2)}), or a smaller model"
    )


def _load_data(session: Session, dataset_id: str, store: ArtefactStore) -> LabelledData:
    dataset = get_dataset(session, dataset_id)
    if dataset is None:
        raise DatasetError(f"dataset {dataset_id} no longer exists")
    return data_from_state(load(store, dataset.path, dataset.file_sha256))


def train_job(
    session: Session,
    job: Job,
    owner: str,
    lease: LeaseCheck,
    settings: Settings,
    ranks: Ranks = Ranks(),
) -> tuple[ModelVersion | None, EndReason]:
    """Train to the end, recording each epoch; returns the model to register and why the
    training ended (the model: None on the ranks of a group but rank 0, which write
    nothing). In a group of ranks, every rank runs this, and rank 0 writes."""
    asked = JobSpec.model_validate(job.spec)
    spec = ranks.spec_for_rank(asked)
    device = resolve_device(_device_of(spec))
    if ranks.leads:
        set_device(session, job.id, owner, ranks.device_label(device))
    store = get_store(settings)
    data = _load_data(session, spec.dataset_id, store)
    if spec.validation.dataset_id:
        data = with_test_split(data, _load_data(session, spec.validation.dataset_id, store))
    run = prepare_run(spec, data)
    ranks.distribute(run, compile_network=asked.hyperparameters.compile)
    budgeted = spec.hyperparameters.epochs is None  # never for a group (JobSpec refuses it)
    if budgeted:
        _plan_epochs(session, job, owner, run)
    database = OutageWait(job.id, session, lease, settings)
    done_epochs, recorder = _resume(
        session, job, owner, run, store, spec.early_stopping, database, writes=ranks.leads
    )
    reporter = None
    if ranks.leads:
        reporter = StepReporter(
            job.id,
            owner,
            lease,
            run.optimizer,
            len(run.train),
            first_step=done_epochs * len(run.train),
            deadline=_deadline(spec, recorder.history),
            flush_seconds=settings.step_flush_seconds,
            resources=ResourceSampler(run.device),
        )
    recorder.steps = ranks.steps(reporter, device)
    on_step: Callable[[torch.Tensor], None] = recorder.steps
    sweep = sweep_spec_of(session, job)
    if sweep is not None and sweep.checks_per_epoch > 1:
        on_step = PartwayChecks(on_step, recorder, sweep, done_epochs * len(run.train))
    on_epoch_end: Callable[[EpochResult], bool] = recorder
    if budgeted:
        on_epoch_end = SizedAgainAfterFirstEpoch(session, job, owner, recorder)
    reason = EndReason.COMPLETED
    try:
        with recorder.steps:
            _fit_to_plan(run, on_epoch_end, done_epochs + 1, recorder, on_step)
    except TimeLimitReached:
        if recorder.best is None:
            raise
        reason = EndReason.TIME_LIMIT
    except TrialPruned:
        if recorder.best is None:
            raise  # no epoch ended: there is no model to register
    if reason == EndReason.COMPLETED and recorder.pruned:
        reason = EndReason.PRUNED
    elif reason == EndReason.COMPLETED and recorder.stopped_early:
        reason = EndReason.EARLY_STOPPED
    if not ranks.leads:
        return None, reason
    return _model_version(job, run.spec, run, recorder, store), reason


def _fit_to_plan(
    run: TrainingRun,
    on_epoch_end: Callable[[EpochResult], bool],
    first_epoch: int,
    recorder: EpochRecorder,
    on_step: Callable[[torch.Tensor], None],
) -> None:
    """Train to the plan's last epoch. A plan sized again stops the loop after its first
    epoch, and the loop goes on to the new count."""
    while first_epoch <= run.epochs and not recorder.stopping:
        run.fit(run.epochs, on_epoch_end, first_epoch=first_epoch, on_step=on_step)
        first_epoch = recorder.history[-1].epoch + 1


def _plan_epochs(session: Session, job: Job, owner: str, run: TrainingRun) -> None:
    """A job with only a time budget: size its epochs, and say so in the job."""
    spec = run.spec
    budget = filled(spec.limits.max_run_seconds)
    epochs, why = epochs_for_budget(run, budget, RECIPES[spec.model.arch].max_epochs)
    run.plan(epochs)
    _store_plan(session, job, owner, run, why)


def _store_plan(session: Session, job: Job, owner: str, run: TrainingRun, why: str) -> None:
    sources = (job.spec_sources or {}) | {"hyperparameters.epochs": why}
    plan_epochs(session, job.id, owner, run.spec.model_dump(mode="json"), sources)
    log.info("job %s: %s", job.id, why)


class SizedAgainAfterFirstEpoch:
    """The end of each epoch of a job sized to its time budget. After the first, its real
    time sizes the run again; that is done before the recorder writes last.pt, so that the
    checkpoint resumes the new schedule. True (stop the loop) when the count changed, or
    when the recorder says to stop."""

    def __init__(self, session: Session, job: Job, owner: str, recorder: EpochRecorder):
        self.session, self.job, self.owner, self.recorder = session, job, owner, recorder

    def __call__(self, result: EpochResult) -> bool:
        sized_again = result.epoch == 1 and self._size_again()
        return self.recorder(result) or sized_again

    def _size_again(self) -> bool:
        run, steps = self.recorder.run, self.recorder.steps
        if not isinstance(steps, StepReporter):
            raise RuntimeError("a job sized to its budget reports its own steps, in one process")
        now = time.monotonic()
        started = steps.deadline - filled(run.spec.limits.max_run_seconds)
        most = RECIPES[run.spec.model.arch].max_epochs
        epochs, why = epochs_after_first(now - started, steps.deadline - now, most)
        if epochs == run.epochs:
            return False
        run.plan(epochs, epochs_done=1)
        _store_plan(self.session, self.job, self.owner, run, why)
        return True


def _resume(
    session: Session,
    job: Job,
    owner: str,
    run: TrainingRun,
    store: ArtefactStore,
    early_stopping: EarlyStopping | None,
    database: OutageWait,
    writes: bool = True,
) -> tuple[int, EpochRecorder]:
    """Continue from the last checkpoint the job's row names, if an earlier attempt
    recorded one. Returns the epochs done."""
    if job.last_checkpoint is None:
        if writes:  # an earlier attempt may have stored steps of its first epoch
            forget_progress_after(session, job.id, owner)
        return 0, EpochRecorder(session, job, owner, run, store, early_stopping, database, writes)
    checkpoint = load(store, job.last_checkpoint, job.last_checkpoint_sha256)
    epoch = checkpoint["epoch"]
    run.restore(checkpoint)
    if writes:
        resume_job(session, job.id, owner, epoch, step=epoch * len(run.train))
    # Made after resume_job, so that it reads the history as resumed.
    recorder = EpochRecorder(session, job, owner, run, store, early_stopping, database, writes)
    recorder.judge_trial()  # the attempt before may have stopped before it acted on it
    if writes:
        log.info("job %s: attempt %d resumes after epoch %d", job.id, job.attempt, epoch)
    return epoch, recorder


def _deadline(spec: JobSpec, history: list[EpochResult]) -> float:
    limit = spec.limits.max_run_seconds
    if limit is None:
        return float("inf")
    return time.monotonic() + limit - sum(result.seconds for result in history)


def _model_version(
    job: Job, spec: JobSpec, run: TrainingRun, recorder: EpochRecorder, store: ArtefactStore
) -> ModelVersion:
    """The model a succeeded job registers: its best epoch, with that epoch's report on the
    validation data."""
    best = recorder.best_checkpoint
    if recorder.best is None or best is None:
        raise RuntimeError(f"job {job.id} ended without recording an epoch")
    return ModelVersion(
        job_id=job.id,
        name=spec.name or spec.task,
        task=spec.task,
        arch=spec.model.arch,
        classes=run.description["classes"],
        metrics=recorder.best.as_dict(),
        checkpoint_path=best.key,
        sha256=best.sha256,
        evaluation=served_epoch_report(run, load(store, best.key, best.sha256)),
    )


def _finish(session: Session, job: Job, owner: str, model: ModelVersion, reason: EndReason) -> None:
    if not finish_job(session, job.id, owner, model, reason):
        current = get_job(session, job.id)
        if current is not None and current.status == JobStatus.CANCELLING:
            raise JobCancelled(job.id)  # asked to stop after its last step: it stops unserved
        raise LeaseLost(job.id)
    log.info(
        "job %s: succeeded (%s), model %s (best epoch %d, val_accuracy %.4f)",
        job.id,
        reason,
        model.id,
        model.metrics["epoch"],
        model.metrics["val_accuracy"],
    )
