"""One job's life in the worker: claim, train, checkpoint each epoch, register the model."""

import logging
from pathlib import Path

from sqlalchemy.orm import Session

from app import repository
from app.config import get_settings
from app.db import get_session_factory
from app.schemas import JobCreate
from app.tables import ModelVersion
from models.checkpoint import make_checkpoint
from models.data import DatasetError, LabelledData, data_from_state, with_test_split
from models.files import load_plain, save_atomically
from workers.recipe import TrainingRun, prepare_run, resolve_device
from workers.training import EpochResult

log = logging.getLogger("trainserve.worker")


class EpochRecorder:
    """After each epoch: write last.pt (to resume) and best.pt (to serve), then the metrics."""

    def __init__(self, session: Session, job_id: str, run: TrainingRun, folder: Path):
        self.session, self.job_id, self.run, self.folder = session, job_id, run, folder
        self.best: EpochResult | None = None
        self.best_sha256: str | None = None

    def __call__(self, result: EpochResult) -> None:
        checkpoint = make_checkpoint(
            **self.run.description,
            network=self.run.network,
            epoch=result.epoch,
            metrics=result.as_dict(),
        )
        is_best = self.best is None or result.val_accuracy > self.best.val_accuracy
        if is_best:
            self.best_sha256 = save_atomically(checkpoint, self.folder / "best.pt")
            self.best = result
        resume_state = {"optimizer": self.run.optimizer.state_dict()}
        if self.run.scheduler is not None:
            resume_state["scheduler"] = self.run.scheduler.state_dict()
        save_atomically(checkpoint | resume_state, self.folder / "last.pt")
        repository.record_epoch(self.session, self.job_id, result.as_dict(), is_best)
        log.info(
            "job %s epoch %d train_loss=%.4f val_loss=%.4f val_accuracy=%.4f %.0f samples/s",
            self.job_id,
            result.epoch,
            result.train_loss,
            result.val_loss,
            result.val_accuracy,
            result.samples_per_second,
        )


def run_job(job_id: str) -> None:
    with get_session_factory()() as session:
        job = repository.get_job(session, job_id)
        if job is None or job.status != "queued":  # unknown, ended or taken: a stale message
            log.info("job %s: not queued, message skipped", job_id)
            return
        spec = JobCreate.model_validate(job.spec)
        try:
            device = resolve_device(spec.device)
        except DatasetError as exc:
            repository.fail_job(session, job_id, str(exc))
            return
        if not repository.claim_job(session, job_id, str(device)):
            log.info("job %s: taken by another worker, message skipped", job_id)
            return
        log.info("job %s: started on %s", job_id, device)
        try:
            _train(session, job_id, spec)
        except DatasetError as exc:
            log.info("job %s: failed: %s", job_id, exc)
            repository.fail_job(session, job_id, str(exc))
        except Exception as exc:
            log.exception("job %s: crashed", job_id)
            repository.fail_job(session, job_id, f"training crashed: {type(exc).__name__}: {exc}")


def _load_data(session: Session, dataset_id: str) -> LabelledData:
    dataset = repository.get_dataset(session, dataset_id)
    if dataset is None:
        raise DatasetError(f"dataset {dataset_id} no longer exists")
    return data_from_state(load_plain(Path(dataset.path)))


def _train(session: Session, job_id: str, spec: JobCreate) -> None:
    data = _load_data(session, spec.dataset_id)
    if spec.validation.dataset_id:
        data = with_test_split(data, _load_data(session, spec.validation.dataset_id))
    run = prepare_run(spec, data)
    folder = get_settings().artifacts_dir / "jobs" / job_id
    recorder = EpochRecorder(session, job_id, run, folder)
    run.fit(spec.hyperparameters.epochs, on_epoch_end=recorder)
    model = ModelVersion(
        job_id=job_id,
        name=spec.name or spec.task,
        task=spec.task,
        arch=spec.model.arch,
        classes=run.description["classes"],
        metrics=recorder.best.as_dict(),
        checkpoint_path=str(folder / "best.pt"),
        sha256=recorder.best_sha256,
    )
    repository.finish_job(session, job_id, model)
    log.info(
        "job %s: succeeded, model %s (best epoch %d, val_accuracy %.4f)",
        job_id,
        model.id,
        recorder.best.epoch,
        recorder.best.val_accuracy,
    )
