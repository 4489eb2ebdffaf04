"""Annotated dependency aliases for route signatures."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.keys import FailedAuthentications, client_address
from app.metrics import Metrics
from app.quotas import TokenBuckets, rate_refusal
from app.serving import ModelServer
from app.store.db import get_db
from app.store.tables import ApiKey, utcnow

SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer ts_…`")
CHALLENGE = {"WWW-Authenticate": "Bearer"}
UNKNOWN_OR_REVOKED = "the API key is unknown or revoked"


# async, with no session: a key comes from the process's KeyCache, so most requests need
# neither a database connection nor a thread.
async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiKey | None:
    """The request's key as this process holds it, revoked or not (None with auth off); 401
    without one, 429 from an address past its failed authentications. Whether it may call
    the route is `admit`'s to say (`require_scope`)."""
    if not get_settings().auth_enabled:
        return None
    if credentials is None:
        raise HTTPException(401, "send an API key: 'Authorization: Bearer <key>'", CHALLENGE)
    failures: FailedAuthentications = request.app.state.auth_failures
    address = client_address(request.scope)
    if refusal := failures.refusal(address):
        raise refusal
    key = await request.app.state.key_cache.find(credentials.credentials)
    if key is None:
        failures.failed(address)
        raise HTTPException(401, UNKNOWN_OR_REVOKED, CHALLENGE)
    return key


CurrentKeyDep = Annotated[ApiKey | None, Depends(authenticate)]


def admit(
    key: ApiKey, scopes: Sequence[str], buckets: TokenBuckets, settings: Settings
) -> HTTPException | None:
    """The refusal for this key calling a route of one of `scopes` (401 revoked or
    expired, 403 another scope, 429 over its rate), or None, the request then counted
    against the key's rate."""
    if refusal := unusable_key_refusal(key) or scope_refusal(key, scopes):
        return refusal
    return rate_refusal(buckets, key, settings)


def unusable_key_refusal(key: ApiKey) -> HTTPException | None:
    """The 401 for a key that is no longer good on any route: revoked, or expired."""
    if key.revoked_at is not None:
        return HTTPException(401, UNKNOWN_OR_REVOKED, CHALLENGE)
    if key.expires_at is not None and key.expires_at <= utcnow():
        return HTTPException(401, f"the API key expired at {key.expires_at.isoformat()}", CHALLENGE)
    return None


def scope_refusal(key: ApiKey, scopes: Sequence[str]) -> HTTPException | None:
    """The 403 for a key calling a route of other scopes (app.limits answers it before the
    body is read, the route's check after), or None."""
    if scope_allows(key, scopes):
        return None
    needed = ", ".join(repr(scope) for scope in scopes)
    return HTTPException(
        403, f"this key's scope is {key.scope!r}; this route needs {needed} or 'admin'"
    )


def scope_allows(key: ApiKey, scopes: Sequence[str]) -> bool:
    """Whether the key may call a route of these scopes: one of its own, or any as admin."""
    return key.scope == "admin" or key.scope in scopes


@dataclass(frozen=True)
class ScopeCheck:
    """A router dependency: a key `admit`s for one of these scopes (admin passes every
    scope), then `reject_unknown_query`. One dependency, not two: FastAPI's solving costs
    per dependency per request (py-spy, GET /jobs/{id} at c=32: a fifth of the API's CPU).
    An object, so that app.past_router can find a route's check and `run` it itself. The
    key it admits is the request's `key_of`."""

    scopes: tuple[str, ...]

    async def __call__(self, request: Request, key: CurrentKeyDep) -> None:  # async: no hop
        _admit(request, key, self.scopes)
        request.state.api_key = key
        await reject_unknown_query(request)

    async def run(self, request: Request) -> None:
        """The same check, for a request reached past FastAPI's dependency solving."""
        await self(request, await authenticate(request, await bearer(request)))


def require_scope(*scopes: str):
    """The dependency of a route that needs a key of one of these scopes (or admin)."""
    return Depends(ScopeCheck(scopes))


def key_of(request: Request) -> ApiKey | None:
    """The key the route's ScopeCheck admitted (None with auth off): what an endpoint past
    FastAPI's router, which takes no dependencies, acts for."""
    return request.state.api_key


def _admit(request: Request, key: ApiKey | None, scopes: tuple[str, ...]) -> None:
    if key is None:  # auth is off
        return
    refusal = admit(key, scopes, request.app.state.rate_limits, get_settings())
    if refusal is not None:
        if refusal.status_code == 401:  # revoked or expired: a failed authentication
            request.app.state.auth_failures.failed(client_address(request.scope))
        raise refusal


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


# async: FastAPI would run a plain def in its thread pool, a hop per request for nothing.
async def get_model_server(request: Request) -> ModelServer:
    return request.app.state.model_server


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def require_multipart(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise HTTPException(
            415,
            f"send multipart/form-data with the field 'file', "
            f"not {content_type or 'no content type'}",
        )


CeleryDep = Annotated[Celery, Depends(get_celery)]


async def reject_unknown_query(request: Request) -> None:  # async: as ScopeCheck
    """422 for a query parameter the route does not take: a typo (?limt=5) is not ignored."""
    if not request.scope["query_string"]:
        return
    known = _query_names(request.scope["route"].dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise HTTPException(
            422, f"unknown query parameter {unknown[0]!r}; this route takes: {takes}"
        )


def _query_names(dependant: Dependant) -> set[str]:
    names = set()
    for parameter in dependant.query_params:
        model = parameter.field_info.annotation  # a query model's fields are its names
        if isinstance(model, type) and issubclass(model, BaseModel):
            names |= {field.alias or name for name, field in model.model_fields.items()}
        else:
            names.add(parameter.alias)
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


ModelServerDep = Annotated[ModelServer, Depends(get_model_server)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
