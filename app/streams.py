"""Event streams: a per-key limit on those open, a client that leaves one mid-way, and
the end of a stream for good.

A client that leaves an event stream mid-way is not an error of the app.

FastAPI's SSE keep-alive task can be inside its send when the client disconnects; anyio
then raises BrokenResourceError (or ClosedResourceError) out of the route, and uvicorn
logs a traceback for a disconnect that is normal (fastapi/fastapi discussion 15725; the
fix there was not merged). Once a response has started there is nothing left to answer,
so such an error is logged as one line and dropped; any other error, and any error before
the response started, goes on as before.
"""

import contextlib
import logging
from collections.abc import Iterator

from anyio import BrokenResourceError, ClosedResourceError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("trainserve.api")
PEER_GONE = (BrokenResourceError, ClosedResourceError)


class PeerGoneMidStream:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_start)
        except* PEER_GONE:
            if not started:
                raise
            log.info("%s: the client left mid-response", scope.get("path"))


class StreamSlots:
    """How many event streams each key holds open in this process, against a limit: each
    stream polls the database for as long as it lasts, so one key must not open hundreds.
    Only the event loop touches the counts."""

    def __init__(self, per_key: int):
        self.per_key = per_key
        self._open: dict[str, int] = {}

    def open_streams(self, key_id: str) -> int:
        return self._open.get(key_id, 0)

    @contextlib.contextmanager
    def taken(self, key_id: str) -> Iterator[None]:
        """Hold one of the key's slots while the block runs; TooManyStreams if none is free."""
        held = self.open_streams(key_id)
        if self.per_key and held >= self.per_key:
            raise TooManyStreams(
                f"this key has {held} event streams open and may have {self.per_key} "
                "(TRAINSERVE_MAX_EVENT_STREAMS_PER_KEY): close one first"
            )
        self._open[key_id] = held + 1
        try:
            yield
        finally:
            self._open[key_id] -= 1
            if not self._open[key_id]:
                del self._open[key_id]


class TooManyStreams(Exception):
    pass


class StreamOver(Exception):
    """The job has ended and nothing follows the client's Last-Event-ID: answered 204,
    which tells an EventSource (the browser's, npm `eventsource`) to stop reconnecting."""
