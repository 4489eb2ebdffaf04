"""create_app(): routers, middleware, error handlers, and what lives for the process."""

import asyncio
import gc
import logging
import os
from contextlib import asynccontextmanager

import torch
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.broker import make_celery
from app.config import Settings, get_settings
from app.deps import require_scope
from app.keys import FailedAuthentications, KeyCache, LastAdminKey, bootstrap_admin_key
from app.kserve import V2ErrorBodies
from app.limits import BodySizeLimit, KeyBeforeBody
from app.logs import configure_logging
from app.metrics import Metrics, RequestMetrics
from app.openapi import openapi_document
from app.past_router import PastRouter
from app.quotas import TokenBuckets
from app.routes import (
    datasets,
    evaluations,
    explain,
    health,
    jobs,
    keys,
    models,
    predict,
    shares,
    sweeps,
    v2,
    workers,
)
from app.schemas import Responses, as_v2_errors, error
from app.serving import ModelServer, UnknownModel
from app.store.db import get_session_factory
from app.store.outage import DATABASE_UNREACHABLE, OutageNotice
from app.store.pages import InvalidCursor
from app.store.versions import ModelFileCorrupt, VersionAliased
from app.streams import PeerGoneMidStream, StreamOver, StreamSlots, TooManyStreams
from app.sweeper import Sweeper
from app.ui import mount_dashboard
from models.data import DatasetError, UnsupportedFormat

log = logging.getLogger("trainserve.api")
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")

# What any route behind a key may answer; a route's own entry for a status replaces these.
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}
PROTECTED_RESPONSES: Responses = {
    400: error("The body cannot be parsed."),
    401: error("No API key, or an unknown or revoked one."),
    403: error("The key's scope does not cover this route, or the thing is another key's."),
    413: error("The request body is over the route's limit."),
    422: error("Invalid fields; the detail names them."),
    429: error(
        "The key's rate limit (for POST /jobs, also its job quota) is reached, or the "
        "client address made too many failed authentications."
    )
    | {"headers": RETRY_AFTER},
    503: error("The database cannot be reached; retry shortly.") | {"headers": RETRY_AFTER},
}
V2_PROTECTED_RESPONSES = as_v2_errors(PROTECTED_RESPONSES)
DATABASE_RETRY_AFTER_S = 5
# One line when requests start meeting an outage, then one every 30 s while it lasts: a
# line per request would be thousands a second under load.
ANSWERED_503 = OutageNotice(log, "requests answered 503", repeat_seconds=30)
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


# The routers whose routes PastRouter answers: POST /predict, the job routes polled, and
# KServe V2 infer.
PAST_ROUTER = (predict.predict_router, jobs.polled_router, v2.infer_router)


def protected(*scopes: str, responses: Responses = PROTECTED_RESPONSES) -> dict:
    """include_router arguments for routes that need a key of one of these scopes (or admin)."""
    return {"dependencies": [require_scope(*scopes)], "responses": responses}


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings = get_settings()
    # One core is the event loop's (HTTP, decoding); torch gets the others, at least one.
    torch.set_num_threads(settings.torch_threads or max(1, (os.cpu_count() or 1) - 1))
    app.state.celery = make_celery(settings)
    app.state.model_server = server = ModelServer(settings, app.state.metrics)
    app.state.explain_pool = explain_pool = explain.explain_pool(settings)
    poller = asyncio.create_task(server.poll())  # its first pass starts loading the defaults
    sweeper = Sweeper(settings, app.state.celery)
    sweeper.start()
    app.state.rate_limits = TokenBuckets()
    app.state.key_cache = KeyCache(settings.key_cache_seconds)
    app.state.stream_slots = StreamSlots(settings.max_event_streams_per_key)
    app.state.auth_failures = FailedAuthentications(
        settings.auth_failures_per_minute, settings.auth_failure_burst
    )
    _announce_auth(settings)
    # What is alive now (torch, the app) lives as long as the process: keep it out of the
    # collector, whose full passes over it stalled every request for 0.3-0.5 s under load.
    gc.freeze()
    # Each request allocates a few hundred objects that die young; collecting the youngest
    # generation every 700 allocations cost a tenth of the event loop's time under load.
    gc.set_threshold(50_000, 20, 10)
    yield
    poller.cancel()
    server.stop()
    sweeper.stop()
    explain_pool.shutdown(wait=False, cancel_futures=True)


def _announce_auth(settings: Settings) -> None:
    if not settings.auth_enabled:
        log.warning(
            "TRAINSERVE_AUTH_ENABLED is false: anyone who can reach the API may do anything"
        )
        return
    try:
        with get_session_factory()() as session:
            written_to = bootstrap_admin_key(session, settings)
    except SQLAlchemyError as exc:  # the service still starts; /readyz reports the database
        log.error("could not check for an admin key (database unavailable?): %s", exc)
        return
    if written_to:
        log.warning(
            "no admin API key existed, so one was made; its token is in %s, which only this "
            "user may read (send it as 'Authorization: Bearer <key>'; `python -m app.keys` "
            "makes others)",
            written_to,
        )


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = exc.headers or {}
    if exc.status_code == 405:  # Starlette names only the first route's methods in Allow
        headers = {"Allow": ", ".join(_methods_at(request))}
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def _methods_at(request: Request) -> list[str]:
    """Every method some route answers at the request's path. Asked of each route by
    `matches` alone: included routers (FastAPI 0.165) do not list their routes' methods."""
    return [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    ]


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    ANSWERED_503.failed(exc)
    return JSONResponse(
        {"detail": "the database cannot be reached; retry shortly"},
        status_code=503,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


async def _stream_over(_request: Request, _exc: Exception) -> Response:
    return Response(status_code=204)


def _error(status: int):
    async def handler(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handler


def _api_routes(*routers: APIRouter) -> list[APIRoute]:
    routes = []
    for route in (route for router in routers for route in router.routes):
        if not isinstance(route, APIRoute):
            raise TypeError(f"PastRouter takes APIRoutes, not {type(route).__name__}")
        routes.append(route)
    return routes


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging()
    app = FastAPI(
        title="trainserve",
        version="0.1.0",
        summary="Train PyTorch models from uploaded data and serve their predictions.",
        lifespan=lifespan,
        telemetry=None if settings.opentelemetry else NO_TELEMETRY,
    )
    app.state.metrics = Metrics()
    app.add_middleware(PastRouter, api=app, routes=_api_routes(*PAST_ROUTER))  # innermost
    app.add_middleware(BodySizeLimit, settings=settings)
    # A stranger's 401, a wrong scope's 403 before any 413; the scopes from the routes.
    app.add_middleware(KeyBeforeBody, settings=settings, api=app)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)  # sees every 401 and 413
    app.add_middleware(V2ErrorBodies)  # the 401 and 413 above in the protocol's shape too
    app.add_middleware(PeerGoneMidStream)  # outermost: a stream's client may leave mid-way
    # Starlette calls a handler only with its own class, but its stubs want one of any
    # Exception.
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(UnsupportedFormat, _error(415))
    app.add_exception_handler(DatasetError, _error(422))
    app.add_exception_handler(InvalidCursor, _error(422))
    app.add_exception_handler(ModelFileCorrupt, _error(503))
    # A lost connection or a full pool is the database's state, not a bug: 503, not 500.
    for unreachable in DATABASE_UNREACHABLE:
        app.add_exception_handler(unreachable, _database_unavailable)
    app.add_exception_handler(LastAdminKey, _error(409))
    app.add_exception_handler(UnknownModel, _error(404))
    app.add_exception_handler(VersionAliased, _error(409))
    app.add_exception_handler(TooManyStreams, _error(429))
    app.add_exception_handler(StreamOver, _stream_over)
    # Their requests never reach the router: PastRouter hands them to their endpoints. They
    # are included for the docs and OpenAPI, and for the 405 other methods at their paths
    # get; each route declares its own key check, which PastRouter runs.
    for router in PAST_ROUTER:
        v2_errors = router is v2.infer_router
        app.include_router(
            router, responses=V2_PROTECTED_RESPONSES if v2_errors else PROTECTED_RESPONSES
        )
    app.include_router(v2.router, **protected("predict", responses=V2_PROTECTED_RESPONSES))
    app.include_router(explain.router, **protected("predict"))
    app.include_router(datasets.router, **protected("train"))
    app.include_router(jobs.router, **protected("train"))
    app.include_router(sweeps.router, **protected("train"))
    app.include_router(models.router, **protected("train", "deploy"))
    app.include_router(evaluations.router, **protected("train", "deploy"))
    app.include_router(models.deploy_router, **protected("deploy"))
    app.include_router(shares.router, **protected("train"))  # each route: owner or admin
    app.include_router(keys.router, **protected("admin"))
    app.include_router(workers.router, **protected("admin"))
    # /healthz and /readyz need no key, nor do /docs and the dashboard's pages; /metrics
    # the scope of a setting.
    app.include_router(health.router)
    app.include_router(v2.health_router)
    open_metrics = settings.metrics_scope == "open"
    app.include_router(
        health.metrics_router, **({} if open_metrics else protected(settings.metrics_scope))
    )
    mount_dashboard(app)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


app = create_app()
