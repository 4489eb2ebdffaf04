"""Per-key quotas: a token bucket for requests, and a cap on a key's open jobs."""

import math
import threading
import time
from collections.abc import Callable

from fastapi import HTTPException
from sqlalchemy.orm import Session

from app.config import Settings
from app.store.jobs import count_open_jobs
from app.store.keys import lock_key
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
