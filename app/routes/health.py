from fastapi import APIRouter, HTTPException
from sqlalchemy import text

from app.deps import CeleryDep, SessionDep
from app.schemas import error

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: error("The database or broker is down.")})
def readyz(*, session: SessionDep, celery: CeleryDep) -> dict:
    """The database and the broker answer."""
    try:
        session.execute(text("SELECT 1"))
    except Exception as exc:
        raise HTTPException(503, f"database unavailable: {exc}") from exc
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        raise HTTPException(503, f"broker unavailable: {exc}") from exc
    return {"status": "ready"}
