"""Keyset pages shared by every listing: newest first, on created_at then id."""

import base64
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.tables import is_id


class InvalidCursor(ValueError):
    pass


def encode_cursor(row) -> str:
    """A cursor naming the row a page ended at: any row with created_at and id."""
    return base64.urlsafe_b64encode(f"{row.created_at.isoformat()}|{row.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        if not is_id(row_id):
            raise ValueError(row_id)
        return datetime.fromisoformat(created), row_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one this service returned") from exc


def page(session: Session, table, limit: int, cursor: str | None, *filters):
    """Up to `limit` rows of `table` after the cursor, and the next page's cursor (or None)."""
    query = select(table).where(*filters)
    if cursor:
        query = query.where(after(table, *decode_cursor(cursor)))
    rows = session.scalars(query.order_by(*newest_first(table)).limit(limit + 1)).all()
    return cut_page(rows, limit)


def after(table, created, row_id):
    """The rows after the cursor's (created, id), in the order of newest_first."""
    return (table.created_at < created) | ((table.created_at == created) & (table.id < row_id))


def newest_first(table) -> tuple:
    return table.created_at.desc(), table.id.desc()


def cut_page(rows, limit: int):
    """A page of the first `limit` of `limit + 1` rows, and the cursor to the next page."""
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor
