"""How an API process hears that the model registry changed: a few microseconds a request
instead of a query a request.

Every change to the registry (a version stored with its job's success, an alias moved, a
version deleted) bumps the registry's generation in the change's own transaction
(app/store/versions.py). A watch answers `heard()` without waiting on anything: a value
that changes whenever it learns of such a change. The serving cache (app/serving.py) asks
before it answers from what it has loaded, and reads the registry again when the value
moved.

- PostgreSQL: the change's transaction also sends a NOTIFY, which PostgreSQL delivers
  once the change commits. Each API process LISTENs on a connection of its own; `heard()`
  takes in what has reached that socket (one non-blocking read), and the event loop does
  as soon as something arrives, so the new version starts loading before a request asks.
- SQLite (one machine, one file): `PRAGMA data_version`, on a connection of its own, says
  whether any other connection committed since its last look; only then is the generation
  read. It reads the database itself, so it is never behind it.
- Anything else, or a listener whose connection was lost: nothing is heard, and the
  registry poll (every TRAINSERVE_REGISTRY_POLL_SECONDS) keeps serving in step. The poll
  opens a lost listener again.
"""

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import make_url
from sqlalchemy.dialects import sqlite

from app.config import Settings
from app.store.db import sqlite_file
from app.store.versions import GENERATION, REGISTRY_CHANNEL

log = logging.getLogger("trainserve.serving")


class RegistryWatch:
    """Hears nothing: the poll alone keeps serving in step."""

    how = "not heard of between polls"

    def heard(self) -> object:
        """A value that changes whenever this watch learns that the registry changed."""
        return None

    async def connect(self) -> None:
        """Start watching, or again after a lost connection; nothing if watching already."""

    def close(self) -> None:
        """Stop watching."""


class PostgresListener(RegistryWatch):
    """LISTEN on a connection of its own; every change's transaction sends a NOTIFY."""

    how = f"heard through PostgreSQL's LISTEN {REGISTRY_CHANNEL}"

    def __init__(self, conninfo: str, on_heard: Callable[[], None]):
        self._conninfo, self._on_heard = conninfo, on_heard
        self._connection: psycopg.Connection | None = None
        self._socket = -1  # the connection's, kept: a broken connection no longer says it
        self._heard = 0  # notifications taken in, and connections lost or made
        self._warned = False  # about the connection being down, once until it is back

    def heard(self) -> int:
        if self._connection is not None:
            self._take_in(self._connection)
        return self._heard

    async def connect(self) -> None:
        if self._connection is not None:
            return
        try:
            self._connection = await asyncio.to_thread(self._listen)
        except psycopg.Error as exc:
            if not self._warned:
                log.warning("registry notifications unavailable, polling meanwhile: %s", exc)
                self._warned = True
            return
        self._warned = False
        self._socket = self._connection.fileno()
        asyncio.get_running_loop().add_reader(self._socket, self._arrived)
        self._heard += 1  # what changed while nobody listened is unknown: read again

    def close(self) -> None:
        if self._connection is not None:
            asyncio.get_running_loop().remove_reader(self._socket)
            self._connection.close()
            self._connection = None

    def _listen(self) -> psycopg.Connection:
        connection = psycopg.connect(self._conninfo, autocommit=True)
        connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(REGISTRY_CHANNEL)))
        return connection

    def _take_in(self, connection: psycopg.Connection) -> None:
        """Count the notifications that have reached the socket, without waiting for any.
        Through libpq's calls (psycopg's `pgconn`): a tenth of what Connection.notifies()
        costs, which is paid on every request."""
        pgconn = connection.pgconn
        try:
            pgconn.consume_input()
        except psycopg.OperationalError as exc:
            self._lost(exc)
            return
        while pgconn.notifies() is not None:
            self._heard += 1

    def _arrived(self) -> None:
        """The socket is readable: a notification, or the connection closing."""
        before = self._heard
        if self.heard() != before:
            self._on_heard()

    def _lost(self, exc: Exception) -> None:
        log.warning("registry notifications lost, polling until they are back: %s", exc)
        self._warned = True
        self.close()
        self._heard += 1
        self._on_heard()


class SqliteDataVersion(RegistryWatch):
    """The generation, read again whenever another connection has committed."""

    how = "read through SQLite's data_version on every request"

    def __init__(self, path: str):
        self._path = path
        self._cursor: sqlite3.Cursor | None = None
        self._data_version: object = None
        self._generation: object = None
        self._query = str(
            GENERATION.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
        )

    def heard(self) -> object:
        if self._cursor is None:
            return None
        try:
            data_version = self._cursor.execute("PRAGMA data_version").fetchone()
            if data_version != self._data_version:  # another connection committed something
                self._generation = self._cursor.execute(self._query).fetchone()
                self._data_version = data_version  # once the generation is read
        except sqlite3.Error:
            pass  # the file busy for a moment: the next request or poll looks again
        return self._generation

    async def connect(self) -> None:
        if self._cursor is None and Path(self._path).exists():  # connect() would create it
            # Autocommit, and never waiting on a lock: each look is a read of its own.
            connection = sqlite3.connect(self._path, isolation_level=None, timeout=0)
            self._cursor = connection.cursor()

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.connection.close()
            self._cursor = None


def registry_watch(settings: Settings, on_heard: Callable[[], None]) -> RegistryWatch:
    """The watch for the settings' database; `on_heard` is called on the event loop when a
    change arrives before any request asked."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "postgresql":
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return PostgresListener(conninfo, on_heard)
    path = sqlite_file(settings.database_url)
    return SqliteDataVersion(path) if path else RegistryWatch()
