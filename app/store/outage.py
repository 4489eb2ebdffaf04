"""A database outage as the processes report it: the errors that mean the database cannot
be reached, and one log line when a part of a process first meets one (and one when it
reaches the database again), never a line per failed statement, beat or request."""

import logging
import threading
import time

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# A lost or refused connection, a server shutting down (OperationalError), or a pool
# with no connection free in time: the database's state, not a bug of the statement.
DATABASE_UNREACHABLE = (OperationalError, PoolTimeout)


def first_line(exc: BaseException) -> str:
    """The error's first line: SQLAlchemy's text goes on with the statement, its parameters
    and a link, none of which says why the database was not reached."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class OutageNotice:
    """Logs `what` failing for want of the database once when it starts, again every
    `repeat_seconds` while it lasts (with the count of failures since), and once when the
    caller says it worked again; a caller that cannot tell (a request answered 503) starts
    a new outage with a failure `repeat_seconds` after the last. Safe from any thread."""

    def __init__(self, log: logging.Logger, what: str, repeat_seconds: float = 60.0):
        self.log, self.what, self.repeat_seconds = log, what, repeat_seconds
        self._lock = threading.Lock()
        self._since: float | None = None  # when the outage began, as this part saw it
        self._logged_at = self._failed_at = 0.0
        self._failures = 0  # since the last line

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._failed_at > self.repeat_seconds:
                self._since = None  # quiet for that long: this is another outage
            self._failures += 1
            self._failed_at = now
            first = self._since is None
            if not first and now - self._logged_at < self.repeat_seconds:
                return
            if first:
                self._since = now
                self.log.warning("%s: the database is unreachable: %s", self.what, first_line(exc))
            else:
                self.log.warning(
                    "%s: the database is still unreachable (%d failures in %.0f s): %s",
                    self.what,
                    self._failures,
                    now - self._logged_at,
                    first_line(exc),
                )
            self._logged_at, self._failures = now, 0

    def recovered(self) -> None:
        with self._lock:
            if self._since is None:
                return
            self.log.info(
                "%s: the database is reachable again, after %.1f s",
                self.what,
                time.monotonic() - self._since,
            )
            self._since, self._failures = None, 0
