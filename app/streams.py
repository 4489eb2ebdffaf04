"""A client that leaves an event stream mid-way is not an error of the app.

FastAPI's SSE keep-alive task can be inside its send when the client disconnects; anyio
then raises BrokenResourceError (or ClosedResourceError) out of the route, and uvicorn
logs a traceback for a disconnect that is normal (fastapi/fastapi discussion 15725; the
fix there was not merged). Once a response has started there is nothing left to answer,
so such an error is logged as one line and dropped; any other error, and any error before
the response started, goes on as before.
"""

import logging

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
