"""Engine and session factory, built once per process from the settings."""

import time
from collections.abc import Iterator
from functools import lru_cache, partial
from pathlib import Path

from sqlalchemy import Connection, Dialect, Engine, create_engine, event, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from app.config import get_settings


def _enable_sqlite_concurrency(dbapi_connection, _record) -> None:
    # The API and the worker share the file: WAL lets readers run beside the writer,
    # and the busy timeout makes a writer wait instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# Connections kept open per process: about as many as its thread pool (anyio's 40 threads)
# has routes at the database at once under load. SQLAlchemy's default keeps 5 and opens
# and closes 10 more on demand: under 32 clients of the job API, PostgreSQL then started a
# backend process for most requests (GET /jobs/{id}: 203 req/s, 407 with these).
POOL = {"pool_size": 20, "max_overflow": 20}


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL; None for an in-memory database or another kind."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = sqlite_file(url)
        if database is not None:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # An in-memory database has one connection per thread.
        pool = POOL if database is not None else {}
        engine = create_engine(url, connect_args={"check_same_thread": False}, **pool)
        event.listen(engine, "connect", _enable_sqlite_concurrency)
        return engine
    # Last in, first out: under a light load the same few connections serve every request,
    # so they stay recent, and the rest wait idle (and are pinged when next used).
    engine = create_engine(url, pool_use_lifo=True, **POOL)
    event.listen(engine, "checkin", _note_checkin)
    event.listen(engine, "checkout", partial(_ping_if_idle, engine.dialect))
    return engine


# pool_pre_ping pinged every connection checked out, a round trip per request (a sixth of
# the API's CPU for GET /jobs/{id}). A connection back from a request less than this long
# ago was working then, and a database restart takes longer: only one idle for longer is
# pinged, so a restart stays invisible to clients all the same, and under load no request
# waits for a ping. (A statement that finds its connection lost is a 503, app.main, and
# SQLAlchemy then replaces every connection opened before.)
PING_AFTER_IDLE_S = 0.1
CHECKED_IN = "trainserve_checked_in"  # the pool entry's info: when it last came back


def _note_checkin(_dbapi_connection, entry: ConnectionPoolEntry) -> None:
    entry.info[CHECKED_IN] = time.monotonic()


def _ping_if_idle(dialect: Dialect, dbapi_connection, entry: ConnectionPoolEntry, _proxy) -> None:
    """pool_pre_ping's check, for a connection idle long enough to have been lost unseen
    (not one just opened)."""
    checked_in = entry.info.get(CHECKED_IN)
    if checked_in is None or time.monotonic() - checked_in < PING_AFTER_IDLE_S:
        return
    try:
        dialect.do_ping(dbapi_connection)
    except dialect.loaded_dbapi.Error as exc:
        if not dialect.is_disconnect(exc, dbapi_connection, None):
            raise
        # As pool_pre_ping does: this and every older connection are replaced.
        raise InvalidatePoolError(str(exc)) from exc


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@lru_cache
def get_session_factory() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


def read_only_connection() -> Connection:
    """A connection for a request that only reads: no ORM session (its bookkeeping took as
    much CPU as the two statements of GET /jobs/{id}), in autocommit, so a read costs no
    BEGIN and no ROLLBACK round trip; PostgreSQL's READ COMMITTED gives each statement its
    own snapshot inside a transaction too, so the answers are the same."""
    return _in_autocommit(get_engine()).connect()


@lru_cache(maxsize=1)
def _in_autocommit(engine: Engine) -> Engine:
    # Made once per engine: each copy compiles its statements anew (0.17 of the 0.76 ms of
    # CPU a read of one job cost on SQLite).
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def get_db() -> Iterator[Session]:
    with get_session_factory()() as session:
        yield session
