"""SQLAlchemy tables, and the values of their state columns. ("models" is kept for
networks: these are tables.)"""

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class JobStatus(StrEnum):
    """A job's life: queued → running → succeeded | failed, or → cancelling → cancelled.
    An infrastructure failure sends a running job back to queued (a new attempt)."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class EndReason(StrEnum):
    """Why a job ended."""

    COMPLETED = "completed"  # every epoch ran
    EARLY_STOPPED = "early_stopped"
    TIME_LIMIT = "time_limit"  # limits.max_run_seconds
    CANCELLED = "cancelled"
    INVALID = "invalid"  # bad spec or data: never retried
    OUT_OF_MEMORY = "out_of_memory"  # the device's memory ran out: a smaller batch may fit
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    PRUNED = "pruned"  # a sweep's trial, stopped by the sweep's early-stopping rule


class SweepStatus(StrEnum):
    """A sweep's life: running → succeeded (its trials done, or its time budget spent) |
    failed (no trial produced a model) | cancelled."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


LEASED = (JobStatus.RUNNING, JobStatus.CANCELLING)  # a worker holds the job, renewing its lease
ENDED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


ID_PATTERN = re.compile(r"[0-9a-f]{32}")


def new_id() -> str:
    return uuid.uuid4().hex


def is_id(value: str) -> bool:
    """Ids are 32 hex digits: anything else matches no row and never reaches the database
    (PostgreSQL refuses some strings, such as those holding NUL, with an error)."""
    return ID_PATTERN.fullmatch(value) is not None


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """Timezone-aware UTC on the way out, on PostgreSQL and on SQLite (which drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, _dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: UtcDateTime,
    }


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(40))
    format: Mapped[str] = mapped_column(String(20))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # sha256 of the upload's hash and the read options: one stored copy per pair.
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    classes: Mapped[list[Any]]
    counts: Mapped[dict[str, Any]]
    # Reader facts training needs: image shape, or the text and label columns.
    details: Mapped[dict[str, Any]]
    # Files of an image zip left out: hidden, not_an_image, and the first few not images.
    skipped: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # What models.datachecks found at upload: imbalance, duplicates, leakage (None: stored
    # before the checks existed).
    checks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Its decoded tensors' key in the artefact store, and their sha256 (None: stored before
    # the store recorded it, migration 0013), which every read is checked against.
    path: Mapped[str] = mapped_column(Text)
    file_sha256: Mapped[str | None] = mapped_column(String(64))
    # The key that uploaded it (None: admin's, such as those stored before ownership).
    owner_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when it was deleted while ended jobs still name it: the row stays for them, the
    # file is gone, and no listing, job or upload sees it again.
    deleted_at: Mapped[datetime | None]


class ApiKey(Base):
    """A bearer key, stored as the sha256 of the token: the token itself is shown only once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the token's start, to tell keys apart
    # Overrides of the settings' defaults for this key; None means the default.
    rate_limit_per_second: Mapped[float | None] = mapped_column(Float)
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]  # None: never
    # True on the key the service made at its first start, None on every other: the unique
    # index lets one API process make it however many start at once.
    first_admin: Mapped[bool | None] = mapped_column(Boolean, unique=True)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    task: Mapped[str] = mapped_column(String(40), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    # The spec's model name (else the task) and network: what a listing shows, in columns
    # so that it need not read the spec (migration 0009 says why).
    name: Mapped[str] = mapped_column(String(200))
    arch: Mapped[str] = mapped_column(String(40))
    spec: Mapped[dict[str, Any]]  # resolved: app.recipes filled what the client left out
    # Where each filled value of the spec came from ("given", "recipe: …", "data: …", …).
    spec_sources: Mapped[dict[str, Any] | None]
    status: Mapped[str] = mapped_column(String(20), index=True, default=JobStatus.QUEUED)
    end_reason: Mapped[str | None] = mapped_column(String(40))  # an EndReason
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    resumed_from_epoch: Mapped[int | None] = mapped_column(Integer)
    # The lease: who runs the job and until when, unless its heartbeat renews it.
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(index=True)
    heartbeat_at: Mapped[datetime | None]
    cancel_requested_at: Mapped[datetime | None]
    # "<api key id>:<Idempotency-Key header>", or the header alone when auth is off.
    idempotency_key: Mapped[str | None] = mapped_column(String(240), unique=True, index=True)
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    # Sequence number of the job's newest event; bumped under the row lock, so gap-free.
    event_seq: Mapped[int] = mapped_column(Integer, default=0)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer)
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    best_val_accuracy: Mapped[float | None] = mapped_column(Float)
    device: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    # The Celery queue it is routed to (by the device it needs) and the worker (its Celery
    # node name) that runs or last ran it.
    queue: Mapped[str] = mapped_column(
        String(60), default="trainserve", server_default="trainserve"
    )
    worker: Mapped[str | None] = mapped_column(String(200))
    # The checkpoints that count, in the artefact store: the last epoch's (to resume) and
    # the best one's (to serve). An object is only these once its row names it here.
    last_checkpoint: Mapped[str | None] = mapped_column(Text)
    last_checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    best_checkpoint: Mapped[str | None] = mapped_column(Text)
    best_checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    # The key that created the job and owns it (None with auth off): quotas count its open
    # jobs, and a key's listing reads its own in the listing's order.
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"))
    # A sweep's trial: its sweep, its number there (from 0) and the values the sweep's
    # sampler gave its searched fields. The unique pair is what makes a trial asked once.
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id"), index=True)
    trial_number: Mapped[int | None] = mapped_column(Integer)
    trial_params: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    # The listing's order, newest first: a page and a cursor's place are read from it; and
    # the same for one key's jobs.
    __table_args__ = (
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_api_key_id_created_at_id", "api_key_id", "created_at", "id"),
        UniqueConstraint("sweep_id", "trial_number", name="uq_jobs_sweep_trial"),
    )

    history: Mapped[list["EpochMetrics"]] = relationship(
        order_by="EpochMetrics.epoch", cascade="all, delete-orphan", lazy="selectin"
    )
    model: Mapped["ModelVersion | None"] = relationship(lazy="selectin", viewonly=True)


class Sweep(Base):
    """A hyper-parameter search: its spec (app.sweepspec.SweepSpec) and where it stands.
    Its trials are jobs; what its sampler and pruner know is rebuilt from them (app.tuning),
    so nothing about a sweep lives only in a process's memory."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))  # the model name its trials train
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), index=True, default=SweepStatus.RUNNING)
    # The trial with the best objective so far (no foreign key: a trial may be deleted).
    best_job_id: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(240), unique=True)
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline_at: Mapped[datetime | None]  # the overall time budget's end
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_sweeps_created_at_id", "created_at", "id"),)


class EpochMetrics(Base):
    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float] = mapped_column(Float)
    train_accuracy: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float] = mapped_column(Float)
    val_accuracy: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    samples_per_second: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrialCheck(Base):
    """A sweep's trial validated partway through an epoch, for the sweep's rule to judge it
    there (app.sweepspec: min_epochs of 1/n). An epoch's end is its EpochMetrics row."""

    __tablename__ = "trial_checks"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epochs: Mapped[float] = mapped_column(Float)  # trained by then: 1.5 is half the second
    val_loss: Mapped[float] = mapped_column(Float)
    val_accuracy: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobEvent(Base):
    """What a job's event stream replays: status changes, steps and epochs, in order."""

    __tablename__ = "job_events"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(20))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MetricPoint(Base):
    """One value of a named metric at a global training step (per step or per epoch)."""

    __tablename__ = "metric_points"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[float] = mapped_column(Float)


class ModelName(Base):
    """A model name and the key it belongs to: the key of the first job that named it
    (None: admin's). Its versions, aliases and jobs are its owner's and its readers'."""

    __tablename__ = "model_names"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetShare(Base):
    """A key, not the owner, that may read a dataset and train on it."""

    __tablename__ = "dataset_shares"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelShare(Base):
    """A key, not the owner, that may read a model name: its versions, weights, aliases,
    predictions; with scope deploy, also move its aliases and delete its versions."""

    __tablename__ = "model_shares"

    name: Mapped[str] = mapped_column(
        ForeignKey("model_names.name", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """A servable model: one per succeeded job."""

    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    task: Mapped[str] = mapped_column(String(40), index=True)
    arch: Mapped[str] = mapped_column(String(60))
    classes: Mapped[list[Any]]
    metrics: Mapped[dict[str, Any]]
    # The training data's sha256 and the job spec as run: enough to retrain the same model.
    data_sha256: Mapped[str | None] = mapped_column(String(64))
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    checkpoint_path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    # The served epoch's report on the job's validation data (models.evaluation); None for
    # versions stored before it was computed.
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The sha256 of its ONNX export in the artefact store, once one was made (app/exports.py).
    onnx_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Worker(Base):
    """A Celery worker as it last told: which queues it serves, on what device. Each worker
    renews its row every heartbeat; the API tells from it whether a queue is served."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # its Celery node name
    queues: Mapped[list[Any]]
    device: Mapped[str] = mapped_column(String(20))
    # [{"name": "NVIDIA H200", "memory_bytes": …}, …]: what nvidia-smi lists (CUDA_VISIBLE_DEVICES)
    gpus: Mapped[list[Any]]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ModelAlias(Base):
    """Where an alias of a model name points now: `latest`, `production`, any other."""

    __tablename__ = "model_aliases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    alias: Mapped[str] = mapped_column(String(60), primary_key=True)
    # No cascade: a version an alias points at cannot be deleted.
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    moved_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasMove(Base):
    """Every move of an alias, kept after the versions it names are deleted."""

    __tablename__ = "alias_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    alias: Mapped[str] = mapped_column(String(60))
    from_version_id: Mapped[str | None] = mapped_column(String(32))
    to_version_id: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(20))  # job_succeeded, moved, rolled_back
    # The id of the API key that moved it; None for a job's success or with auth off.
    moved_by: Mapped[str | None] = mapped_column(String(64))
    moved_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_alias_moves_name_alias_id", "name", "alias", "id"),)


class RegistryGeneration(Base):
    """One row counting the changes to the registry (a version stored or deleted, an alias
    moved), bumped in each change's own transaction: an API process that reads a new count
    knows its aliases are out of date (app/registry_watch.py)."""

    __tablename__ = "registry_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger)


class EvaluationStatus(StrEnum):
    """An evaluation on new data: queued → running → succeeded | failed."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Evaluation(Base):
    """A model version judged on a dataset it may never have seen, by a worker."""

    __tablename__ = "evaluations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    # No foreign key: the report outlives the dataset it was made on.
    dataset_id: Mapped[str] = mapped_column(String(32))
    split: Mapped[str] = mapped_column(String(10))  # test, train or all: what was evaluated
    status: Mapped[str] = mapped_column(String(20), default=EvaluationStatus.QUEUED)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_evaluations_version_id_created_at", "version_id", "created_at"),)
