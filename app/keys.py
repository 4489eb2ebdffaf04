"""API keys: random tokens stored as their sha256, and a command line to manage them.

    python -m app.keys create --scope train [--name NAME] [--rate-limit N] [--max-jobs N]
                              [--expires 2027-06-30T00:00:00Z]
    python -m app.keys list
    python -m app.keys revoke KEY_ID

A token has 256 random bits, so one sha256 (no slow password hash) is enough to make
the stored hashes useless to whoever reads the database. TRAINSERVE_ADMIN_KEY, chosen by
a person, must have at least 32 characters (app.config); of any token only the first
PREFIX_CHARS are stored in the clear.
"""

import argparse
import asyncio
import hashlib
import logging
import math
import os
import secrets
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.quotas import TokenBuckets
from app.schemas import SCOPES
from app.store.db import get_session_factory
from app.store.keys import (
    add_key,
    count_active_admin_keys,
    find_key_by_hash,
    get_key,
    list_keys,
    revoke_key,
)
from app.store.outage import OutageNotice
from app.store.tables import ApiKey

TOKEN_PREFIX = "ts_"
# What is stored of a token in the clear, to tell keys apart: "ts_" and 4 of its 43 random
# characters (24 of 256 bits); 7 of a TRAINSERVE_ADMIN_KEY's 32 or more.
PREFIX_CHARS = 7
# Where the first start writes the admin key it makes, under TRAINSERVE_ARTIFACTS_DIR.
FIRST_ADMIN_KEY_FILE = "first-admin-key"
log = logging.getLogger("trainserve.keys")


class LastAdminKey(Exception):
    """Revoking this key would leave no admin key."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(
    session: Session,
    *,
    scope: str,
    name: str | None = None,
    rate_limit_per_second: float | None = None,
    max_concurrent_jobs: int | None = None,
    expires_at: datetime | None = None,
    token: str | None = None,
    first_admin: bool | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key; return it with its token, which is not kept anywhere."""
    token = token or new_token()
    key = ApiKey(
        name=name or f"{scope} key",
        scope=scope,
        key_hash=hash_token(token),
        prefix=token[:PREFIX_CHARS],
        rate_limit_per_second=rate_limit_per_second,
        max_concurrent_jobs=max_concurrent_jobs,
        expires_at=expires_at,
        first_admin=first_admin,
    )
    return add_key(session, key), token


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def revoke(session: Session, key: ApiKey) -> ApiKey:
    """Revoke the key (again, harmlessly, if it is revoked already)."""
    if key.revoked_at is not None:
        return key
    if key.scope == "admin" and count_active_admin_keys(session) <= 1:
        raise LastAdminKey(
            f"key {key.id} is the last active admin key: create another admin key first"
        )
    return revoke_key(session, key)


class KeyCache:
    """Keys by token hash, in this process, read again once they are `ttl` seconds old.

    A request then needs no database query (and no thread to run one). Only a token seen
    for the first time waits for the database; an old copy answers while it is read
    again in the background, and goes on answering while the database is unreachable,
    so predictions outlive a database restart. A revocation through this process applies
    at once (`forget`); through another process or the command line, within `ttl` and a
    read. Unknown tokens are not remembered: they cannot fill it.
    """

    def __init__(self, ttl: float, clock=time.monotonic):
        self._ttl, self._clock = ttl, clock
        self._keys: dict[str, tuple[ApiKey, float]] = {}  # token hash -> (key, read at)
        self._reads: dict[str, asyncio.Future] = {}  # token hash -> its read in progress
        self._outage = OutageNotice(log, "API keys read again (their old copies answer)")

    async def find(self, token: str) -> ApiKey | None:
        """The token's key, revoked or not; None for an unknown token."""
        key = self.cached(token)
        if key is None:
            return await asyncio.shield(self._read_once(hash_token(token)))
        return key

    def cached(self, token: str) -> ApiKey | None:
        """The token's key if this process holds a copy (read again in the background once
        it is old), else None: only `find` waits for the database."""
        key_hash = hash_token(token)
        cached = self._keys.get(key_hash)
        if cached is None:
            return None
        if self._clock() - cached[1] >= self._ttl:
            self._read_once(key_hash)
        return cached[0]

    def _read_once(self, key_hash: str) -> asyncio.Future:
        """The key's read in progress, started if there is none: one read per key however
        many requests find it old at once (64 did, each second)."""
        if key_hash not in self._reads:
            self._reads[key_hash] = asyncio.ensure_future(self._read(key_hash))
        return self._reads[key_hash]

    async def _read(self, key_hash: str) -> ApiKey | None:
        now = self._clock()
        try:
            key = await run_in_threadpool(_read_key, key_hash)
        except SQLAlchemyError as exc:
            if key_hash not in self._keys:
                raise
            self._outage.failed(exc)
            return self._keys[key_hash][0]
        finally:
            del self._reads[key_hash]
        self._outage.recovered()
        if key is None:
            self._keys.pop(key_hash, None)
        else:
            self._keys[key_hash] = (key, now)
        return key

    def forget(self, key: ApiKey) -> None:
        self._keys.pop(key.key_hash, None)


def _read_key(key_hash: str) -> ApiKey | None:
    with get_session_factory()() as session:  # the key leaves it detached, its fields loaded
        return find_key_by_hash(session, key_hash)


def client_address(scope: Mapping[str, Any]) -> str:
    """The address a request came from (as uvicorn's proxy headers set it, if on)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


class FailedAuthentications:
    """Failed authentications (an unknown, revoked or expired key) per client address, in
    this process: `per_minute` of them, `burst` at once; past that, every request from the
    address that sends a key is refused with a 429 until the budget refills, so tokens
    cannot be tried at the speed of the API."""

    def __init__(self, per_minute: float, burst: int, clock=time.monotonic):
        self._rate, self._burst = per_minute / 60, burst
        self._buckets = TokenBuckets(clock)

    def blocked(self, address: str) -> float:
        """Seconds until the address may try again; 0 if it may now."""
        if self._rate <= 0:
            return 0.0
        return self._buckets.wait(address, self._rate, self._burst)

    def refusal(self, address: str) -> HTTPException | None:
        wait = self.blocked(address)
        if not wait:
            return None
        return HTTPException(
            429,
            f"too many failed authentications from {address}; retry in {wait:.0f} s",
            headers={"Retry-After": str(math.ceil(wait))},
        )

    def failed(self, address: str) -> None:
        if self._rate > 0:
            self._buckets.take(address, self._rate, self._burst)


def bootstrap_admin_key(session: Session, settings: Settings) -> Path | None:
    """At start: store TRAINSERVE_ADMIN_KEY if it is set and new; otherwise, when there is no
    active admin key, make one and write its token to a file only this user may read.
    Return that file. One process makes it, however many start at once: the key's
    `first_admin` is unique, so the other processes' inserts fail."""
    if settings.admin_key is not None:
        token = settings.admin_key.get_secret_value()
        if find_key_by_hash(session, hash_token(token)) is None:
            create_key(session, scope="admin", name="TRAINSERVE_ADMIN_KEY", token=token)
        return None
    if count_active_admin_keys(session) > 0:
        return None
    path = settings.artifacts_dir / FIRST_ADMIN_KEY_FILE
    token = new_token()
    pending = _write_private(path.with_name(f".{path.name}.{os.getpid()}.tmp"), token)
    try:
        create_key(session, scope="admin", name="first admin key", token=token, first_admin=True)
    except IntegrityError:  # another process made it, now or at an earlier start
        session.rollback()
        pending.unlink()
        if count_active_admin_keys(session) == 0:
            log.warning(
                "no active admin API key: make one with `python -m app.keys create --scope admin`"
            )
        return None
    pending.replace(path)
    return path


def _write_private(path: Path, token: str) -> Path:
    """A new file readable and writable by this user alone (0600 whatever the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(token + "\n")
    return path


def expiry(value: str) -> datetime:
    """An ISO-8601 date or time (UTC unless it names a zone), for --expires."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO-8601 date or time, such as 2027-06-30T00:00:00Z"
        ) from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.keys", description="Manage API keys.")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print its token once")
    create.add_argument("--scope", choices=SCOPES, required=True)
    create.add_argument("--name", default="")
    create.add_argument("--rate-limit", type=float, help="requests per second (default: setting)")
    create.add_argument("--max-jobs", type=int, help="concurrent jobs (default: setting)")
    create.add_argument("--expires", type=expiry, help="ISO-8601 date or time (default: never)")
    commands.add_parser("list", help="list keys, newest first")
    revoke_command = commands.add_parser("revoke", help="revoke a key by its id")
    revoke_command.add_argument("key_id")
    args = parser.parse_args(argv)
    with get_session_factory()() as session:
        if args.command == "create":
            key, token = create_key(
                session,
                scope=args.scope,
                name=args.name,
                rate_limit_per_second=args.rate_limit,
                max_concurrent_jobs=args.max_jobs,
                expires_at=args.expires,
            )
            print(f"created {key.scope} key {key.id}; its token, shown once:", file=sys.stderr)
            print(token)
        elif args.command == "list":
            _print_keys(session)
        else:
            _revoke_by_id(session, args.key_id)


def _print_keys(session: Session) -> None:
    cursor = None
    while True:
        keys, cursor = list_keys(session, 200, cursor)
        for key in keys:
            state = _state(key)
            print(f"{key.id}  {key.prefix}…  {key.scope:8} {state:18} {key.name}")
        if cursor is None:
            return


def _state(key: ApiKey) -> str:
    if key.revoked_at:
        return f"revoked {key.revoked_at:%Y-%m-%d}"
    if key.expires_at:
        return f"expires {key.expires_at:%Y-%m-%d}"
    return "active"


def _revoke_by_id(session: Session, key_id: str) -> None:
    key = get_key(session, key_id)
    if key is None:
        sys.exit(f"no key with id {key_id!r}")
    try:
        revoke(session, key)
    except LastAdminKey as exc:
        sys.exit(str(exc))
    print(f"revoked {key.id}")


if __name__ == "__main__":
    main()
