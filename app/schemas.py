"""Request and response models. Examples here are what /docs shows."""

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Row

from app.jobspec import EpochMetric, ResourceMetric, StepMetric, Strict, Task
from app.store.tables import EndReason, JobStatus, SweepStatus

# admin passes every scope; deploy moves aliases and deletes versions of the names it reads
Scope = Literal["admin", "train", "deploy", "predict"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
# A name a person reads: no control characters (PostgreSQL cannot store NUL in text).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=PRINTABLE)]
ALIAS_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_EXAMPLES = 1024  # images or texts of one prediction request


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


def v2_error(description: str) -> dict[str, Any]:
    """An entry of a /v2 route's `responses`: its errors have the protocol's shape."""
    json_body = {"application/json": {"schema": {"$ref": "#/components/schemas/V2Error"}}}
    return {"model": V2Error, "description": description, "content": json_body}


def as_v2_errors(responses: "Responses") -> "Responses":
    """The same responses, with the protocol's error body."""
    return {status: entry | v2_error(entry["description"]) for status, entry in responses.items()}


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    models: str = Field(description="What is loaded, or that no model was trained yet.")


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
    checks: dict | None = Field(
        None,
        description="What the examples showed at upload (docs/api.md#data-checks): per split, "
        "the largest and smallest class and their ratio (`imbalance`), examples that repeat "
        "an earlier one exactly (`duplicates`), and test examples also in the training "
        "split (`leakage`), each with its count and the first few positions. Null for "
        "datasets stored before the checks existed.",
    )
    created_at: datetime


class DatasetExample(BaseModel):
    index: int = Field(description="The example's place in the stored dataset.")
    split: Literal["train", "test"]
    text: str | None = Field(None, description="A text set's example (its first characters).")
    thumbnail: str | None = Field(
        None, description="An image set's example: the path of its small PNG."
    )


class ClassExamples(BaseModel):
    name: str
    examples: list[DatasetExample]


class DatasetExamples(BaseModel):
    dataset_id: str
    task: Task
    classes: list[ClassExamples]


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


EVALUATION_HELP = (
    "The served (best) epoch's report on the job's validation data (docs/api.md#evaluation-"
    "reports): accuracy, top-k accuracy, per-class precision, recall, F1 and support, macro "
    "and weighted F1, the confusion matrix with class names, and calibration. Null until "
    "the job succeeds, and for versions stored before reports were computed."
)


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
    sweep_id: str | None = Field(description="The sweep this job is a trial of, if any.")
    trial_number: int | None = Field(description="Its number in the sweep, from 0.")
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
    evaluation: dict | None = Field(description=EVALUATION_HELP)

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
            "evaluation": job.model.evaluation if job.model else None,
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


MetricName = Literal[StepMetric, EpochMetric, ResourceMetric]


class StatusChange(BaseModel):
    """One change of a job's status, as its event stream sent it."""

    seq: int = Field(description="The event's id in the job's stream (Last-Event-ID).")
    at: datetime
    status: JobStatus
    attempt: int | None = None
    end_reason: EndReason | None = None
    error: str | None = None
    resumed_from_epoch: int | None = None


class JobTimeline(BaseModel):
    job_id: str
    changes: list[StatusChange]


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

    @classmethod
    def of(cls, job_id: str, name: MetricName, rows: Iterable[Row]) -> "MetricSeries":
        """From the database's bucketed rows (app.store.records.metric_series)."""
        points = [MetricPointPublic.model_validate(row._asdict()) for row in rows]
        return cls(job_id=job_id, name=name, points=points)


MAX_SERIES_JOBS = 200  # a whole page of GET /jobs at its largest


class SeriesQuery(BaseModel):
    """GET /series's query: one metric of several jobs, as GET /jobs/{id}/metrics
    reads it of one."""

    job_id: list[str] = Field(
        min_length=1,
        max_length=MAX_SERIES_JOBS,
        description="The jobs, as `?job_id=a&job_id=b`; ones the key may not read are left out.",
    )
    name: MetricName = "loss"
    max_points: int = Field(40, ge=1, le=1000, description="Buckets per job, at most.")


class JobsSeries(BaseModel):
    name: MetricName
    items: list[MetricSeries] = Field(description="In the order asked, each job once.")


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
    """Texts to classify: exactly one of `text` (one answer) or `texts` (a list of answers)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "a gripping, beautifully acted film"},
                {"texts": ["dull and overlong", "a delight"], "top_k": 2},
            ],
        },
    )

    text: str | None = Field(None, min_length=1, max_length=100_000)
    texts: list[str] | None = Field(None, min_length=1, max_length=MAX_EXAMPLES)
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


class ImagePredictForm(BaseModel):
    """POST /predict's multipart form: one image in `file`, or several in `files`."""

    file: bytes | None = Field(None, description="An image (PNG, JPEG, …).")
    files: list[bytes] | None = Field(
        None, description=f"Several images (up to {MAX_EXAMPLES}): a list comes back."
    )
    model: str | None = Field(
        None,
        description="A model version id, a job id, name@alias or a name (its production "
        "alias, else latest); default: the newest model name of the task.",
    )
    top_k: int = Field(3, ge=1, le=100)


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


# ---- KServe V2 (the Open Inference Protocol); app/kserve.py reads and writes them -----------

V2Datatype = Literal["BYTES", "FP32", "UINT8"]
# A tensor's elements in JSON, flat in row-major order (or nested one level: [N, 1] sent as
# N lists of one). Absent when they follow the JSON header as binary data.
TensorData = list[str] | list[float] | list[list[str]] | list[list[float]]


class InferTensor(BaseModel):
    name: str = Field(max_length=200)
    shape: list[int] = Field(min_length=1, max_length=4)
    datatype: V2Datatype = Field(
        description="BYTES: texts, or image files (base64 in JSON, raw in binary data); "
        "image models also take UINT8 pixels or FP32 normalised input, [N, C, H, W]."
    )
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_size`: its data follows the JSON header, this long."
    )
    data: TensorData | None = None


class RequestedOutput(BaseModel):
    name: str = Field(max_length=200, description="`label` or `probabilities`.")
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data`: true for its data as binary after the JSON."
    )


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

    id: str | None = Field(None, max_length=200, description="Echoed in the answer.")
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_output`: true for every output as binary data."
    )
    inputs: list[InferTensor] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = Field(
        None, max_length=2, description="The outputs wanted; default: both."
    )


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: V2Datatype
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_size`, when its data follows the JSON header."
    )
    data: list[str] | list[float] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = Field(None, description="The request's, when it sent one.")
    outputs: list[InferOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: V2Datatype
    shape: list[int] = Field(description="-1: any size.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="The version ids of the model name.")
    platform: str = Field(description="`onnxruntime_onnx` or `pytorch`: what runs it.")
    inputs: list[TensorMetadata] = Field(description="Send one of them.")
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class V2Error(BaseModel):
    """Every error answer under /v2, as the Open Inference Protocol has it."""

    error: str


class ModelPublic(BaseModel):
    id: str
    name: str
    task: Task
    network: str
    classes: list[str]
    metrics: dict = Field(description="The served epoch's figures.")
    evaluation: dict | None = Field(description=EVALUATION_HELP)
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
            evaluation=row.evaluation,
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


class TrialPublic(BaseModel):
    """One trial of a sweep: a job, with the values searched and its result."""

    number: int
    job_id: str
    params: dict[str, Any]
    status: JobStatus
    end_reason: EndReason | None
    epoch: int = Field(description="Epochs ended.")
    epochs_trained: float = Field(
        description="Epochs trained: its epochs, with the part of one it trained to its "
        "last check partway through an epoch (pruner.min_epochs of 1/n)."
    )
    pruned_at_epoch: float | None = Field(
        description="How many epochs it had trained when the sweep's rule stopped it "
        "(end_reason pruned): 0.5 is halfway through its first."
    )
    objective: float | None = Field(description="The best of its epochs' objective metric.")
    model_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, trial, objective: float | None) -> "TrialPublic":
        """From an app.store.sweeps.Trial."""
        pruned = trial.end_reason == EndReason.PRUNED
        return cls(
            number=trial.number,
            job_id=trial.job_id,
            params=trial.params,
            status=trial.status,
            end_reason=trial.end_reason,
            epoch=trial.epoch,
            epochs_trained=trial.epochs_trained,
            pruned_at_epoch=trial.epochs_trained if pruned else None,
            objective=objective,
            model_id=trial.model_id,
            created_at=trial.created_at,
            started_at=trial.started_at,
            finished_at=trial.finished_at,
        )


class SweepSummary(BaseModel):
    id: str
    name: str = Field(description="The model name its trials train; <name>@best is its best.")
    status: SweepStatus
    error: str | None
    created_at: datetime
    deadline_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, sweep) -> "SweepSummary":
        return cls.model_validate(sweep, from_attributes=True)


class SweepPublic(SweepSummary):
    """A sweep in full: its spec, every trial, and the best so far."""

    spec: dict = Field(description="As stored: the base job spec as given, defaults filled.")
    trials_planned: int = Field(description="max_trials, or fewer for a smaller grid.")
    trials: list[TrialPublic]
    best_trial: TrialPublic | None = Field(description="The trial with the best objective.")
    epochs_trained: float = Field(
        description="Epochs trained over every trial, with the parts of epochs of trials "
        "stopped partway through one."
    )


class SweepsPublic(BaseModel):
    items: list[SweepSummary]
    next_cursor: str | None


class SweepListQuery(BaseModel):
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = None


class EvaluationCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"dataset_id": "5b0f3c8e2a9d4f6e8c1b7a3d9e2f4c6a"}]},
    )

    dataset_id: str = Field(description="A dataset whose classes are among the model's.")
    split: Literal["auto", "test", "train", "all"] = Field(
        "auto",
        description="The examples to judge the model on: the dataset's test split, its "
        "training split, or all of it; `auto`: the test split where there is one, else all.",
    )


class EvaluationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    model_id: str = Field(validation_alias="version_id")
    dataset_id: str
    split: Literal["test", "train", "all"]
    status: Literal["queued", "running", "succeeded", "failed"]
    report: dict | None = Field(
        description="Once succeeded: the figures of a version's `evaluation`, plus "
        "`most_confidently_wrong` (positions in the dataset, true and predicted class, "
        "probability) and `throughput` (examples per second of the forward passes on the "
        "worker, the runtime and threads)."
    )
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class EvaluationsPublic(BaseModel):
    items: list[EvaluationPublic]
    next_cursor: str | None


class TokenScore(BaseModel):
    token: str
    score: float = Field(
        description="How much the explained class's probability falls without the word."
    )


class Explanation(BaseModel):
    label: str = Field(description="The class explained: the top answer.")
    probability: float
    method: Literal["integrated_gradients", "word_occlusion"]
    model_id: str
    job_id: str
    model_name: str
    attribution: list[list[float]] | None = Field(
        None,
        description="Images: one value per pixel of the image sent (height rows of width "
        "values, scaled down to TRAINSERVE_EXPLAIN_MAX_MAP_SIDE), summed over channels; "
        "positive values speak for the label.",
    )
    overlay_png: str | None = Field(
        None, description="Images: a base64 PNG of the input in grey, red for, blue against."
    )
    steps: int | None = Field(None, description="Images: the integral's steps.")
    completeness_gap: float | None = Field(
        None,
        description="Images: the attributions' sum less the logit's change from a black "
        "image; near 0 when the steps were enough.",
    )
    tokens: list[TokenScore] | None = Field(None, description="Texts: a score per word.")


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
