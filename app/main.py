"""create_app(): routers, middleware, error handlers, and what lives for the process."""

import logging
import os
from contextlib import asynccontextmanager

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.config import Settings, get_settings
from app.db import get_session_factory
from app.deps import reject_unknown_query, require_scope
from app.keys import LastAdminKey, bootstrap_admin_key
from app.limits import BodySizeLimit
from app.queue import make_celery
from app.quotas import TokenBuckets
from app.repository import InvalidCursor
from app.routes import datasets, health, jobs, keys, predict
from app.schemas import error
from app.serving import ModelFileCorrupt, PredictorCache
from app.sweeper import Sweeper
from models.data import DatasetError, UnsupportedFormat

log = logging.getLogger("trainserve.api")

# What any route behind a key may answer; a route's own entry for a status replaces these.
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}
PROTECTED_RESPONSES = {
    400: error("The body cannot be parsed."),
    401: error("No API key, or an unknown or revoked one."),
    403: error("The key's scope does not cover this route."),
    413: error("The request body is over the upload limit."),
    422: error("Invalid fields; the detail names them."),
    429: error("The key's rate limit (for POST /jobs, also its job quota) is reached.")
    | {"headers": RETRY_AFTER},
}


def protected(scope: str) -> dict:
    """include_router arguments for routes that need a key of this scope (or admin)."""
    return {
        "dependencies": [require_scope(scope), Depends(reject_unknown_query)],
        "responses": PROTECTED_RESPONSES,
    }


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings = get_settings()
    torch.set_num_threads(settings.torch_threads or os.cpu_count() or 1)
    app.state.celery = make_celery(settings)
    app.state.predictors = PredictorCache(settings.model_cache_size)
    sweeper = Sweeper(settings, app.state.celery)
    sweeper.start()
    app.state.rate_limits = TokenBuckets()
    _announce_auth(settings)
    yield
    sweeper.stop()


def _announce_auth(settings: Settings) -> None:
    if not settings.auth_enabled:
        log.warning(
            "TRAINSERVE_AUTH_ENABLED is false: anyone who can reach the API may do anything"
        )
        return
    try:
        with get_session_factory()() as session:
            token = bootstrap_admin_key(session, settings)
    except SQLAlchemyError as exc:  # the service still starts; /readyz reports the database
        log.error("could not check for an admin key (database unavailable?): %s", exc)
        return
    if token:
        log.warning(
            "no admin API key existed, so one was made. It is shown only this once: %s "
            "(send it as 'Authorization: Bearer <key>'; `python -m app.keys` makes others)",
            token,
        )


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = exc.headers or {}
    if exc.status_code == 405:  # Starlette names only the first route's methods in Allow
        headers = {"Allow": ", ".join(_methods_at(request))}
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def _methods_at(request: Request) -> list[str]:
    """Every method some route answers at the request's path."""
    methods = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def _error(status: int):
    async def handler(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handler


def create_app() -> FastAPI:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = FastAPI(
        title="trainserve",
        version="0.1.0",
        summary="Train PyTorch models from uploaded data and serve their predictions.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(UnsupportedFormat, _error(415))
    app.add_exception_handler(DatasetError, _error(422))
    app.add_exception_handler(InvalidCursor, _error(422))
    app.add_exception_handler(ModelFileCorrupt, _error(503))
    app.add_exception_handler(LastAdminKey, _error(409))
    app.include_router(datasets.router, **protected("train"))
    app.include_router(jobs.router, **protected("train"))
    app.include_router(predict.router, **protected("predict"))
    app.include_router(keys.router, **protected("admin"))
    app.include_router(health.router)  # /healthz and /readyz need no key, nor do /docs
    return app


app = create_app()
