from datetime import UTC
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from app.deps import SessionDep
from app.keys import create_key, revoke
from app.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, ApiKeysPublic, error
from app.store import keys
from app.store.tables import utcnow

router = APIRouter(prefix="/keys", tags=["keys"])


@router.post("", status_code=201, responses={422: error("A bad field, or expires_at past.")})
def create_api_key(*, session: SessionDep, body: ApiKeyCreate) -> ApiKeyCreated:
    """Create a key. Its token is in the answer, and only there: the service keeps a hash."""
    expires_at = body.expires_at
    if expires_at is not None:
        expires_at = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
        if expires_at <= utcnow():
            raise HTTPException(422, f"expires_at {expires_at.isoformat()} has passed")
    key, token = create_key(
        session,
        scope=body.scope,
        name=body.name,
        rate_limit_per_second=body.rate_limit_per_second,
        max_concurrent_jobs=body.max_concurrent_jobs,
        expires_at=expires_at,
    )
    return ApiKeyCreated(**ApiKeyPublic.model_validate(key).model_dump(), key=token)


@router.get("")
def list_api_keys(
    *,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> ApiKeysPublic:
    """Keys, revoked ones included, newest first. Tokens are never shown again."""
    items, next_cursor = keys.list_keys(session, limit, cursor)
    return ApiKeysPublic(items=items, next_cursor=next_cursor)


@router.post(
    "/{key_id}/revoke",
    responses={
        404: error("No such key."),
        409: error("The last active admin key cannot be revoked."),
    },
)
def revoke_api_key(*, request: Request, session: SessionDep, key_id: str) -> ApiKeyPublic:
    """Revoke a key: its requests get 401 from now on (from other API processes, within
    TRAINSERVE_KEY_CACHE_SECONDS). Revoking twice changes nothing."""
    key = keys.get_key(session, key_id)
    if key is None:
        raise HTTPException(404, f"no key with id {key_id!r}")
    revoked = revoke(session, key)
    request.app.state.key_cache.forget(revoked)
    return ApiKeyPublic.model_validate(revoked)
