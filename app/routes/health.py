import logging

from fastapi import APIRouter, HTTPException, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from app.deps import CeleryDep, MetricsDep, ModelServerDep, SessionDep
from app.schemas import Health, Readiness, error
from app.store import jobs
from app.store.outage import DATABASE_UNREACHABLE, OutageNotice

router = APIRouter(tags=["health"])
# Apart: app.main includes it behind the key scope TRAINSERVE_METRICS_SCOPE names.
metrics_router = APIRouter(tags=["health"])
log = logging.getLogger("trainserve.api")
# A probe every few seconds during an outage: one line as it starts, one as it ends.
PROBED_DATABASE = OutageNotice(log, "/readyz", repeat_seconds=60)


@router.get("/healthz")
def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get(
    "/readyz",
    responses={503: error("The database or broker is down, or models are loading.")},
)
async def readyz(*, session: SessionDep, celery: CeleryDep, server: ModelServerDep) -> Readiness:
    """The database and the broker answer, and a model is loaded (once one exists)."""
    await run_in_threadpool(_check_dependencies, session, celery)
    loaded, why = server.ready()
    if not loaded:
        raise HTTPException(503, f"not ready: {why}")
    return Readiness(status="ready", models=why)


def _check_dependencies(session, celery) -> None:
    """503 naming what is down. The answer is open to anyone, so it says no more: the
    error's text (a host, a user name, a path) goes to the log, on one line."""
    try:
        session.execute(text("SELECT 1"))
    except DATABASE_UNREACHABLE as exc:
        PROBED_DATABASE.failed(exc)
        raise HTTPException(503, "not ready: the database is unavailable") from exc
    except Exception as exc:
        raise _unready("database", exc) from exc
    PROBED_DATABASE.recovered()
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        raise _unready("broker", exc) from exc


def _unready(what: str, exc: Exception) -> HTTPException:
    detail = " ".join(str(exc).split())  # one line: a driver's message may hold several
    log.warning("/readyz: the %s is unavailable: %s: %s", what, type(exc).__name__, detail)
    return HTTPException(503, f"not ready: the {what} is unavailable")


# Declared so that a generated client reads the answer as text (it has no body otherwise).
METRICS_ANSWER = {
    "description": "The Prometheus text exposition format.",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


@metrics_router.get("/metrics", response_class=Response, responses={200: METRICS_ANSWER})
def metrics(*, session: SessionDep, metrics: MetricsDep, server: ModelServerDep) -> Response:
    """Prometheus text format: requests, latency, batches, model loads, jobs by status."""
    body = metrics.render(jobs.count_jobs_by_status(session), len(server.cache))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
