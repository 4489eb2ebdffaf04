"""Per-key quotas (a token bucket for requests, a cap on a key's open jobs, the bytes it
may store) and the operator's ceilings on what one job may ask for."""

import math
import threading
import time
from collections.abc import Callable

from fastapi import HTTPException
from sqlalchemy.orm import Session

from app.config import Settings
from app.recipes import DataFacts, Resolved
from app.store.artefacts import get_store
from app.store.jobs import count_open_jobs
from app.store.keys import lock_key
from app.store.storage import bytes_stored_by
from app.store.tables import ApiKey

# How long a client over its job quota should wait before asking again: jobs take minutes.
JOB_QUOTA_RETRY_AFTER_S = 30


class TokenBuckets:
    """One bucket per key, in this process: `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when)
        self._lock = threading.Lock()
        self._clock = clock

    def take(self, key_id: str, rate: float, burst: int) -> float:
        """Take one token: 0 if there was one, else the seconds until there is."""
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.get(key_id, (burst, now))
            tokens = min(burst, tokens + (now - then) * rate)
            granted = tokens >= 1
            self._buckets[key_id] = (tokens - 1 if granted else tokens, now)
        return 0.0 if granted else (1 - tokens) / rate

    def wait(self, key_id: str, rate: float, burst: int) -> float:
        """The seconds until `take` would find a token; none is taken."""
        with self._lock:
            tokens, then = self._buckets.get(key_id, (burst, self._clock()))
        tokens = min(burst, tokens + (self._clock() - then) * rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / rate


def rate_refusal(buckets: TokenBuckets, key: ApiKey, settings: Settings) -> HTTPException | None:
    """Count one request against the key's rate limit: None, or the 429 (with Retry-After)
    for a key over it, the request then not counted."""
    rate = _rate(key, settings)
    if rate <= 0:
        return None
    wait = buckets.take(key.id, rate, max(settings.rate_limit_burst, math.ceil(rate)))
    if not wait:
        return None
    return HTTPException(
        429,
        f"this key's rate limit is {rate:g} requests per second; retry in {wait:.2f} s",
        headers={"Retry-After": str(math.ceil(wait))},
    )


def _rate(key: ApiKey, settings: Settings) -> float:
    return _override(key.rate_limit_per_second, settings.rate_limit_per_second)


def check_job_quota(session: Session, key: ApiKey | None, settings: Settings) -> None:
    """429 if the key already has its most queued or running jobs. Locks the key's row until
    the caller commits, so two requests of one key cannot both take the last place."""
    if key is None:
        return
    limit = _override(key.max_concurrent_jobs, settings.max_concurrent_jobs)
    if limit <= 0:
        return
    lock_key(session, key.id)
    open_jobs = count_open_jobs(session, key.id)
    if open_jobs >= limit:
        raise HTTPException(
            429,
            f"this key has {open_jobs} queued or running jobs and may have {limit} at once: "
            f"wait for one to end",
            headers={"Retry-After": str(JOB_QUOTA_RETRY_AFTER_S)},
        )


def _override(value, default):
    return default if value is None else value


def apply_ceilings(resolved: Resolved, facts: DataFacts, settings: Settings) -> None:
    """422 naming the ceiling a resolved spec goes over (epochs, training batches, run time,
    attempts: TRAINSERVE_MAX_JOB_*). A spec without a time limit gets the ceiling's, so
    that no job trains unbounded."""
    spec = resolved.spec
    limits = spec.limits
    if limits.max_run_seconds is None:
        limits.max_run_seconds = settings.max_job_run_seconds
        resolved.sources["limits.max_run_seconds"] = "ceiling: TRAINSERVE_MAX_JOB_RUN_SECONDS"
    batches = resolved.planned_epochs * math.ceil(
        facts.training_examples / (spec.hyperparameters.batch_size or 1)
    )
    checks = (
        (
            "hyperparameters.epochs",
            resolved.planned_epochs,
            "MAX_JOB_EPOCHS",
            settings.max_job_epochs,
        ),
        (
            "training batches (epochs times batches per epoch)",
            batches,
            "MAX_JOB_STEPS",
            settings.max_job_steps,
        ),
        (
            "limits.max_run_seconds",
            limits.max_run_seconds,
            "MAX_JOB_RUN_SECONDS",
            settings.max_job_run_seconds,
        ),
        ("limits.max_attempts", limits.max_attempts, "MAX_JOB_ATTEMPTS", settings.max_job_attempts),
    )
    for what, value, ceiling, most in checks:
        if value > most:
            raise HTTPException(
                422,
                f"{what} is {value:g} with the defaults filled, over this service's ceiling "
                f"of {most:g} (TRAINSERVE_{ceiling})",
            )


def check_storage_quota(
    session: Session, key: ApiKey | None, settings: Settings, adding: int, refusal: tuple[int, str]
) -> None:
    """Refuse, with the status and the words of `refusal` ((413, "this upload") or (409, "a
    new job")), when what the key stores (its datasets and its jobs' checkpoints) and
    `adding` more bytes go over its storage quota."""
    quota = settings.storage_quota_bytes
    if key is None or quota <= 0:
        return
    used = bytes_stored_by(session, key.id, get_store(settings))
    if used + adding > quota:
        status, what = refusal
        raise HTTPException(
            status,
            f"{what} does not fit: this key stores {used} bytes, and its storage quota is "
            f"{quota} bytes (TRAINSERVE_STORAGE_QUOTA_BYTES); delete datasets or jobs it no "
            "longer needs (DELETE /datasets/{id}, DELETE /jobs/{id})",
        )
