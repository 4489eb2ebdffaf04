"""Request and response models. Examples here are what /docs shows."""

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.jobspec import EpochMetric, StepMetric, Strict, Task
from app.store.tables import EndReason, JobStatus

# admin passes every scope; deploy moves aliases and deletes versions of the names it reads
Scope = Literal["admin", "train", "deploy", "predict"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
# A name a person reads: no control characters (PostgreSQL cannot store NUL in text).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=PRINTABLE)]
ALIAS_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Problem(BaseModel):
    """Every error answer: a sentence, or for invalid fields a list of {loc, msg, type}."""

    detail: str | list[dict[str, Any]]


# A route's `responses`, by status code, as FastAPI takes them.
Responses = dict[int | str, dict[str, Any]]


def error(description: str) -> dict[str, Any]:
    """An entry of a route's `responses`: the description and the Problem body, as JSON
    even on a route whose success is another media type (server-sent events)."""
    json_body = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {"model": Problem, "description": description, "content": json_body}


class SkippedFiles(BaseModel):
    """Files of an image zip that are not in the dataset; none for IDX files and tables."""

    hidden: int = Field(
        0, description="System and hidden files: __MACOSX/, ._*, .DS_Store, Thumbs.db, …"
    )
    not_an_image: int = Field(
        0, description="Files Pillow does not recognise as an image (README, notes.txt)."
    )
    examples: list[str] = Field(
        default_factory=list, description="The first few files that are not images."
    )


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    task: Task
    format: str
    classes: list[str]
    counts: dict[str, dict[str, int]] = Field(description="Examples per class, per split.")
    sha256: str = Field(description="sha256 of the uploaded bytes.")
    size_bytes: int
    details: dict
    skipped: SkippedFiles
    created_at: datetime


class DatasetsPublic(BaseModel):
    items: list[DatasetPublic]
    next_cursor: str | None


class EpochPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float
    samples_per_second: float


class JobSummary(BaseModel):
    """A job as a listing shows it: where it stands, without its spec and per-epoch history
    (GET /jobs/{id} has them)."""

    id: str
    name: str = Field(description="The model name it trains: the spec's name, else the task.")
    task: Task
    arch: str = Field(description="The network, model.arch of the spec.")
    dataset_id: str
    status: JobStatus
    end_reason: EndReason | None = Field(description="Why the job ended.")
    attempt: int = Field(description="Attempts started; more than 1 after a lost worker.")
    max_attempts: int
    epoch: int = Field(description="Epochs done.")
    epochs: int
    progress: float = Field(description="epoch / epochs: from 0 to 1.")
    best_epoch: int | None
    best_val_accuracy: float | None
    last_val_accuracy: float | None = Field(description="The latest epoch's.")
    last_val_loss: float | None = Field(description="The latest epoch's.")
    model_id: str | None
    device: str | None
    error: str | None
    created_at: datetime
    queued_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None

    @classmethod
    def of(cls, row) -> "JobSummary":
        """From a row of app.store.jobs.LISTING."""
        return cls.model_validate(_with_figures(row._asdict()))


def _with_figures(fields: dict) -> dict:
    """A job's fields, with the figures they imply."""
    started, finished = fields["started_at"], fields["finished_at"]
    duration = (finished - started).total_seconds() if started and finished else None
    return fields | {"progress": fields["epoch"] / fields["epochs"], "duration_seconds": duration}


class JobPublic(JobSummary):
    """A job in full: its summary, spec and per-epoch history."""

    resumed_from_epoch: int | None = Field(
        description="The checkpoint epoch the latest attempt continued from."
    )
    cancel_requested_at: datetime | None
    queue: str = Field(description="The Celery queue it is routed to, by resources.device.")
    worker: str | None = Field(description="The worker (Celery node) that runs or last ran it.")
    waiting: str | None = Field(
        None,
        description="Why a queued job waits, when no worker of its queue was seen lately "
        "(TRAINSERVE_WORKER_SEEN_SECONDS); null otherwise.",
    )
    last_event_id: int = Field(
        description="The id of the job's latest event: a stream opened with it as "
        "Last-Event-ID sends only what comes after."
    )
    metrics: EpochPublic | None = Field(description="The latest epoch's.")
    history: list[EpochPublic]
    spec: dict = Field(description="Resolved: every field the request left out is filled.")
    spec_sources: dict[str, str] | None = Field(
        description="Where each value of the spec's model, hyperparameters, text or "
        "augmentation came from: 'given', 'recipe: <network>', 'data: …', 'budget: …', "
        "'auto: …' (why the network was picked) or 'default'. Null for jobs stored before "
        "specs were resolved."
    )

    @classmethod
    def from_rows(cls, row, history: list[dict]) -> "JobPublic":
        """From app.store.jobs.read_job's row and history."""
        return cls._validated(row._asdict(), history)

    @classmethod
    def from_job(cls, job) -> "JobPublic":
        """From a Job with its history and model loaded, as the routes that change it hold it."""
        fields = {name: getattr(job, name) for name in cls.model_fields if hasattr(job, name)}
        fields |= {
            "name": job.spec.get("name") or job.task,
            "arch": job.spec["model"]["arch"],
            "model_id": job.model.id if job.model else None,
            "last_event_id": job.event_seq,
        }
        return cls._validated(fields, job.history)

    @classmethod
    def _validated(cls, fields: dict, history: list) -> "JobPublic":
        latest = history[-1] if history else None
        latest_fields = {
            "history": history,
            "metrics": latest,
            "last_val_accuracy": _field(latest, "val_accuracy"),
            "last_val_loss": _field(latest, "val_loss"),
        }
        return cls.model_validate(_with_figures(fields) | latest_fields)


def _field(epoch, name: str):
    """A field of a history entry (a dict or an EpochMetrics row); None without an entry."""
    if epoch is None:
        return None
    return epoch[name] if isinstance(epoch, dict) else getattr(epoch, name)


MetricName = Literal[StepMetric, EpochMetric]


class MetricPointPublic(BaseModel):
    step: int = Field(description="The last training step in the bucket.")
    value: float = Field(description="Mean over the bucket.")
    min: float
    max: float
    count: int


class MetricSeries(BaseModel):
    job_id: str
    name: MetricName
    points: list[MetricPointPublic]


class JobListQuery(BaseModel):
    """GET /jobs's query: the filters, then the page."""

    status: list[JobStatus] | None = Field(None, description="Any of these.")
    task: Task | None = None
    name: Name | None = Field(None, description="The model name the job trains.")
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = None


class JobsPublic(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None


class LabelProbability(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    label: str
    top_k: list[LabelProbability]
    model_id: str
    job_id: str
    model_name: str


class TextPredictRequest(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "a gripping, beautifully acted film"},
                {"texts": ["dull and overlong", "a delight"], "top_k": 2},
            ],
            # Exactly one of the two, as _one_of_text_or_texts checks.
            "oneOf": [
                {"required": ["text"], "properties": {"text": {"type": "string"}}},
                {"required": ["texts"], "properties": {"texts": {"type": "array"}}},
            ],
        },
    )

    text: str | None = Field(None, min_length=1, max_length=100_000)
    texts: list[str] | None = Field(None, min_length=1, max_length=1024)
    model: str | None = Field(
        None,
        description="A model version id, a job id, name@alias or a name (its production "
        "alias, else latest); default: the newest model name of the task.",
    )
    top_k: int = Field(3, ge=1, le=100)

    @model_validator(mode="after")
    def _one_of_text_or_texts(self) -> "TextPredictRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("send exactly one of 'text' or 'texts'")
        return self

    @property
    def examples(self) -> list[str]:
        if self.texts is not None:
            return self.texts
        if self.text is None:  # _one_of_text_or_texts rejects such a request
            raise ValueError("send exactly one of 'text' or 'texts'")
        return [self.text]


class ApiKeyCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"scope": "predict", "name": "web frontend"}]},
    )

    scope: Scope = Field(
        description="admin passes every scope; train: datasets, jobs and reading models; "
        "deploy: reading models, moving their aliases and deleting versions; predict."
    )
    name: Name | None = Field(None, description="What the key is for.")
    expires_at: datetime | None = Field(
        None, description="When the key stops working (UTC unless a zone is given); never."
    )
    rate_limit_per_second: float | None = Field(
        None, gt=0, le=100_000, description="Default: TRAINSERVE_RATE_LIMIT_PER_SECOND."
    )
    max_concurrent_jobs: int | None = Field(
        None, ge=1, le=10_000, description="Default: TRAINSERVE_MAX_CONCURRENT_JOBS."
    )


class ApiKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    scope: Scope
    prefix: str = Field(description="The token's first characters, to tell keys apart.")
    rate_limit_per_second: float | None
    max_concurrent_jobs: int | None
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The token to send as 'Authorization: Bearer …'; shown once.")


class ApiKeysPublic(BaseModel):
    items: list[ApiKeyPublic]
    next_cursor: str | None


class InferTensor(BaseModel):
    name: str = Field(max_length=200)
    shape: list[int]
    datatype: Literal["BYTES"] = Field(description="Images as base64 strings, or texts.")
    data: list[str] = Field(min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _shape_fits_data(self) -> "InferTensor":
        if self.shape != [len(self.data)]:
            raise ValueError(f"shape must be [{len(self.data)}], one entry per item of data")
        return self


class InferRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [
                        {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["dull", "fun"]}
                    ],
                }
            ]
        }
    )

    id: str | None = Field(None, max_length=200)
    inputs: list[InferTensor] = Field(min_length=1, max_length=1)


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None
    outputs: list[InferOutput]

    @classmethod
    def of(cls, request_id, version, classes: list[str], ranked) -> "InferResponse":
        probabilities = [dict(answer) for answer in ranked]
        return cls(
            model_name=version.name,
            model_version=version.id,
            id=request_id,
            outputs=[
                InferOutput(
                    name="label",
                    shape=[len(ranked)],
                    datatype="BYTES",
                    data=[answer[0][0] for answer in ranked],
                ),
                InferOutput(
                    name="probabilities",
                    shape=[len(ranked), len(classes)],
                    datatype="FP32",
                    data=[p[label] for p in probabilities for label in classes],
                ),
            ],
        )


class ModelPublic(BaseModel):
    id: str
    name: str
    task: Task
    network: str
    classes: list[str]
    metrics: dict = Field(description="The served epoch's figures.")
    data_sha256: str | None = Field(description="sha256 of the uploaded training data.")
    spec: dict | None = Field(description="The job spec, defaults filled in.")
    job_id: str
    checkpoint_path: str = Field(description="Where the checkpoint lies in the artefact store.")
    sha256: str = Field(description="sha256 of the checkpoint file.")
    aliases: list[str] = Field(description="The aliases of its name that point at it.")
    created_at: datetime

    @classmethod
    def of(cls, row, aliases: list) -> "ModelPublic":
        return cls(
            id=row.id,
            name=row.name,
            task=row.task,
            network=row.arch,
            classes=row.classes,
            metrics=row.metrics,
            data_sha256=row.data_sha256,
            spec=row.spec,
            job_id=row.job_id,
            checkpoint_path=row.checkpoint_path,
            sha256=row.sha256,
            aliases=[a.alias for a in aliases],
            created_at=row.created_at,
        )


class ModelsPublic(BaseModel):
    items: list[ModelPublic]
    next_cursor: str | None


class ShareRequest(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"key_id": "5b0f3c8e2a9d4f6e8c1b7a3d9e2f4c6a"}]},
    )

    key_id: str = Field(min_length=1, max_length=64, description="The key to share with.")


class SharePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    key_id: str = Field(description="A key, besides the owner, that may read it.")
    created_at: datetime


class AliasMoveRequest(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"version_id": "9cc7fcb010884e03b5b95a0044881736"}]},
    )

    version_id: str = Field(min_length=1, max_length=64, description="A version of this name.")


class AliasPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    alias: str
    version_id: str
    moved_at: datetime


class AliasMovePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    alias: str
    from_version_id: str | None
    to_version_id: str
    action: str = Field(description="job_succeeded, moved or rolled_back")
    moved_by: str | None = Field(
        description="The id of the API key that moved it; null for a job's success, or with "
        "authentication off."
    )
    moved_at: datetime


class GpuPublic(BaseModel):
    name: str = Field(description="The GPU's model, as nvidia-smi names it.")
    memory_bytes: int


class WorkerPublic(BaseModel):
    name: str = Field(description="Its Celery node name (celery … worker -n NAME).")
    queues: list[str]
    device: str = Field(description="cuda when it sees a GPU, else cpu.")
    gpus: list[GpuPublic] = Field(description="The GPUs it sees (CUDA_VISIBLE_DEVICES).")
    job_id: str | None = Field(description="The job it runs now.")
    started_at: datetime
    heartbeat_at: datetime = Field(description="Its last heartbeat.")
    alive: bool = Field(description="Heard from within TRAINSERVE_WORKER_SEEN_SECONDS.")


class WorkersPublic(BaseModel):
    items: list[WorkerPublic]
