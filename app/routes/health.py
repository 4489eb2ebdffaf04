from fastapi import APIRouter, HTTPException, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from app.deps import CeleryDep, MetricsDep, ModelServerDep, SessionDep
from app.schemas import error
from app.store import jobs

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: error("The database or broker is down, or models are loading.")},
)
async def readyz(*, session: SessionDep, celery: CeleryDep, server: ModelServerDep) -> dict:
    """The database and the broker answer, and a model is loaded (once one exists)."""
    await run_in_threadpool(_check_dependencies, session, celery)
    loaded, why = server.ready()
    if not loaded:
        raise HTTPException(503, f"not ready: {why}")
    return {"status": "ready", "models": why}


def _check_dependencies(session, celery) -> None:
    try:
        session.execute(text("SELECT 1"))
    except Exception as exc:
        raise HTTPException(503, f"database unavailable: {exc}") from exc
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        raise HTTPException(503, f"broker unavailable: {exc}") from exc


@router.get("/metrics", response_class=Response)
def metrics(*, session: SessionDep, metrics: MetricsDep, server: ModelServerDep) -> Response:
    """Prometheus text format: requests, latency, batches, model loads, jobs by status."""
    body = metrics.render(jobs.count_jobs_by_status(session), len(server.cache))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
