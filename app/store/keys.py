"""API keys as stored: hashes, scopes, per-key limits, revocation."""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store.pages import page
from app.store.tables import ApiKey, is_id, utcnow


def add_key(session: Session, key: ApiKey) -> ApiKey:
    session.add(key)
    session.commit()
    return key


def get_key(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id) if is_id(key_id) else None


def find_key_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    """The key with this hash, revoked or not."""
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))


def lock_key(session: Session, key_id: str) -> None:
    """Hold the key's row until commit, so its requests check their quota one at a time."""
    session.execute(select(ApiKey.id).where(ApiKey.id == key_id).with_for_update())


def list_keys(session: Session, limit: int, cursor: str | None):
    return page(session, ApiKey, limit, cursor)


def count_active_admin_keys(session: Session) -> int:
    return session.execute(
        select(func.count())
        .select_from(ApiKey)
        .where(
            ApiKey.scope == "admin",
            ApiKey.revoked_at.is_(None),
            ApiKey.expires_at.is_(None) | (ApiKey.expires_at > utcnow()),
        )
    ).scalar_one()


def revoke_key(session: Session, key: ApiKey) -> ApiKey:
    key.revoked_at = utcnow()
    session.commit()
    return key
