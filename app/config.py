"""One Settings object, read from TRAINSERVE_* environment variables.

The defaults run on one machine with no set-up: a SQLite file, a file-system
broker and a local artefact folder, all under ./var.
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A person picks TRAINSERVE_ADMIN_KEY: at least this long, or the service does not start.
MIN_ADMIN_KEY_CHARS = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINSERVE_", env_file=".env", extra="ignore")

    database_url: str = Field(
        "sqlite:///var/trainserve.db",
        description="SQLAlchemy URL; postgresql+psycopg://… in production.",
    )
    broker_url: str = Field(
        "filesystem://",
        description="Celery broker; redis://… in production. filesystem:// needs no server.",
    )
    artifacts_dir: Path = Field(
        Path("var/artifacts"),
        description="The local artefact folder: datasets, checkpoints and exports, unless "
        "TRAINSERVE_ARTIFACTS names a bucket; and the first admin key's file.",
    )
    artifacts: str | None = Field(
        None,
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
        description="s3://bucket/prefix: datasets, checkpoints and exports in an "
        "S3-compatible store (credentials from AWS_* variables); unset: the local folder.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="The S3 API's URL for MinIO and others (http://minio:9000); unset: AWS."
    )
    s3_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="How long one S3 request may wait to connect or for an answer before "
        "boto3 retries it (4 tries in all).",
    )
    cache_dir: Path = Field(
        Path("var/cache"),
        description="This machine's read cache of artefacts from the store, by sha256.",
    )
    cache_bytes: int = Field(
        20 * 1024**3, ge=0, description="Most bytes the read cache keeps; least recently read go."
    )
    broker_dir: Path = Field(
        Path("var/broker"), description="Message folder of the filesystem:// broker."
    )
    max_upload_bytes: int = Field(
        512 * 1024 * 1024, description="Largest request body of POST /datasets (an upload)."
    )
    # One phone photo, or max_examples small images (a 32x32 PNG is about 3 KiB): a
    # prediction's body is held whole in memory and parsed, so this times the requests in
    # flight is what predictions may hold.
    max_predict_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest request body of POST /predict and the KServe infer route.",
    )
    # A job spec, a key or an alias move is a few hundred bytes; a sweep's spec a few KiB.
    max_json_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body of every other route."
    )
    max_resize_side: int = Field(
        1024, ge=1, le=9999, description="Largest height or width an upload's resize may ask."
    )
    max_dataset_examples: int = Field(2_000_000, description="Most examples in one dataset.")
    max_decoded_bytes: int = Field(
        1024**3,
        description="Most bytes one upload may decode to: unzipped, gunzipped, or as pixels.",
    )
    # Measured as the rise of the API's resident memory (tests/app/test_ingest_memory.py):
    # an image upload's pixels count twice (decoded, then in one tensor), a table's texts
    # three times (read, pickled, written), and each example a little besides.
    max_ingest_memory_bytes: int = Field(
        2 * 1024**3,
        ge=1024 * 1024,
        description="Most memory ingesting one upload may take: its examples as decoded and "
        "stored, and what each costs besides; an upload that needs more gets 422.",
    )
    max_zip_ratio: int = Field(
        100, description="Largest uncompressed/compressed ratio of a zip entry over 1 MiB."
    )
    auth_enabled: bool = Field(True, description="False: every request may do everything.")
    admin_key: SecretStr | None = Field(
        None,
        description="An admin API key to accept, stored (hashed) at start if missing; at "
        "least 32 characters.",
    )
    auth_failures_per_minute: float = Field(
        10.0,
        ge=0,
        description="Failed authentications (unknown, revoked or expired keys) a client "
        "address may make per minute, past the burst; then 429. 0 means no limit.",
    )
    auth_failure_burst: int = Field(
        20, ge=1, description="Failed authentications a client address may make at once."
    )
    key_cache_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="How long an API process trusts a key it has read (its scope, limits, "
        "revocation) before reading it again; 0 reads it on every request.",
    )
    # Sized for one dashboard and one CLI polling with one key: about 12 requests a second
    # (the job list, each running job and its series, an event stream's reconnect; the
    # CLI's job and its list), 41 at once when a dashboard opens on a page of 20 jobs.
    rate_limit_per_second: float = Field(
        50.0, ge=0, description="Requests per second per API key; 0 means no limit."
    )
    rate_limit_burst: int = Field(100, ge=1, description="Requests a key may send at once.")
    max_concurrent_jobs: int = Field(
        4, ge=0, description="Queued or running jobs per API key; 0 means no limit."
    )
    # Ceilings no job may exceed, checked on the spec as stored (with its defaults filled).
    max_job_epochs: int = Field(
        200, ge=1, description="Most epochs a job may train (hyperparameters.epochs)."
    )
    max_job_steps: int = Field(
        1_000_000,
        ge=1,
        description="Most training batches a job may run: epochs times batches per epoch.",
    )
    max_job_run_seconds: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="Longest limits.max_run_seconds; a job that sets none gets this one.",
    )
    max_job_attempts: int = Field(5, ge=1, description="Largest limits.max_attempts.")
    storage_quota_bytes: int = Field(
        50 * 1024**3,
        ge=0,
        description="Bytes one API key may keep stored: its datasets and its jobs' "
        "checkpoints; 0 means no quota.",
    )
    max_event_streams_per_key: int = Field(
        8,
        ge=0,
        description="Event streams one API key may hold open in one API process; 0: no limit.",
    )
    max_stream_seconds: float = Field(
        3600.0,
        gt=0,
        description="An event stream ends after this long; EventSource reconnects with "
        "Last-Event-ID and goes on where it stopped.",
    )
    metrics_scope: Literal["open", "predict", "train", "admin"] = Field(
        "admin",
        description="The key scope GET /metrics needs; open: no key.",
    )
    model_cache_size: int = Field(4, description="Models kept loaded by the API process.")
    max_models_per_key: int = Field(
        2,
        ge=1,
        description="Model references one key's requests keep in service past the cache, "
        "least recently asked let go first.",
    )
    # A served network takes at most a few hundred pixels a side; decoding a 2048x2048 image
    # already costs the batch thread tens of milliseconds that every queued request waits.
    max_predict_image_pixels: int = Field(
        2048 * 2048,
        ge=1,
        description="Largest image /predict decodes, in pixels, judged from its header.",
    )
    torch_threads: int = Field(
        0,
        description="Threads for torch; 0 means one per core in a worker, and one per core "
        "less one (at least one) in an API process, whose event loop keeps a core.",
    )
    lease_seconds: float = Field(
        30.0, gt=0, description="A job whose worker sends no heartbeat this long is re-queued."
    )
    heartbeat_seconds: float = Field(
        1.0, gt=0, description="How often a worker renews its lease and looks for a cancel."
    )
    worker_seen_seconds: float = Field(
        30.0,
        gt=0,
        description="A queue counts as served while a worker of it sent a heartbeat this "
        "recently; a queued job of another says why it waits.",
    )
    database_wait_seconds: float = Field(
        600.0,
        gt=0,
        description="How long a training attempt waits for an unreachable database at an "
        "epoch's end before it stops (the job resumes from its checkpoint once it is back).",
    )
    cancel_grace_seconds: float = Field(
        30.0, gt=0, description="A cancel not honoured within this is a hard stop."
    )
    sweep_seconds: float = Field(
        5.0,
        ge=0,
        description="How often the API re-queues jobs of lost workers and re-sends queued "
        "jobs the broker lost; 0 turns it off.",
    )
    step_flush_seconds: float = Field(
        1.0, gt=0, description="Per-step losses are written at most this often."
    )
    events_poll_seconds: float = Field(
        0.5, gt=0, description="How often an event stream looks for new events."
    )
    max_batch_size: int = Field(32, ge=1, le=4096, description="Most examples in one forward.")
    batch_budget_ms: float = Field(
        2.0, ge=0, le=1000, description="Longest a batch waits for more requests to arrive."
    )
    serving_runtime: Literal["onnx", "torch"] = Field(
        "onnx",
        description="onnx: image networks answer through ONNX Runtime where they export (2 to "
        "5 times faster on a CPU), text networks through PyTorch; torch: all through PyTorch.",
    )
    opentelemetry: bool = Field(
        False,
        description="FastAPI's own OpenTelemetry traces, metrics and logs, sent to the "
        "providers the process configures. Off, a request skips the check for them (a "
        "seventh of /predict's event-loop time); /metrics is always on.",
    )
    evaluation_max_seconds: float = Field(
        3600,
        gt=0,
        description="An evaluation still running this long after it started is taken for one "
        "whose worker died (it renews no lease) and ended as failed, saying so.",
    )
    explain_steps: int = Field(
        32,
        ge=1,
        le=1024,
        description="Steps of the integral behind an image's explanation: one forward and "
        "backward of that many images.",
    )
    explain_max_inputs: int = Field(
        4, ge=1, le=64, description="Most images or texts one /explain request may send."
    )
    explain_max_words: int = Field(
        200,
        ge=1,
        description="Most words of one text /explain scores: a forward for each word.",
    )
    explain_max_map_side: int = Field(
        512,
        ge=8,
        le=4096,
        description="An image's attribution map and overlay come at the image's own size, "
        "scaled down to at most this many pixels a side.",
    )
    explain_threads: int = Field(
        1,
        ge=1,
        description="Explanations computed at once by an API process, in threads of their "
        "own beside the event loop; more requests wait for one of them.",
    )
    registry_poll_seconds: float = Field(
        1.0, gt=0, le=3600, description="How often each API process re-reads the aliases."
    )

    @field_validator("admin_key")
    @classmethod
    def _admin_key_is_long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value()) < MIN_ADMIN_KEY_CHARS:
            raise ValueError(
                f"TRAINSERVE_ADMIN_KEY has {len(key.get_secret_value())} characters and needs "
                f"at least {MIN_ADMIN_KEY_CHARS}: make one with "
                "`python -c 'import secrets; print(\"ts_\" + secrets.token_urlsafe(32))'`"
            )
        return key


@lru_cache
def get_settings() -> Settings:
    return Settings()
