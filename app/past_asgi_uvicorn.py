"""POST /predict answered inside uvicorn's HTTP protocol, past ASGI: the subclass of
uvicorn's private httptools protocol that app/past_asgi.py serves on the release it was
written for.

Through ASGI a prediction's event-loop time went mostly to the machinery around it: a
task, the scope and message dicts, the middleware chain, the request and response
objects. At c=64 on the development machine, in server CPU per request: a bare
httptools protocol answering at once spent 45 µs, uvicorn with an empty ASGI app 93,
trainserve's event loop through ASGI about 400, and through this lane about 230.

`LaneProtocol` is uvicorn's own httptools protocol, except that a plain prediction
(a small body of known length, a key this process holds, a model it has loaded) goes
from the parser's last callback straight to the model's batcher, and its answer is
written to the socket from the batch's callback.

Anything else goes on through the app as before, and the app stays the one place
that answers errors: a request the lane cannot take whole (an unknown or stale key, a
key over its rate, a query string, a malformed body, a model not loaded yet, an image
that does not decode, a client waiting for 100 Continue) is handed to FastAPI with its
body, which answers it exactly as without the lane. Without this protocol (`uvicorn
app.main:app`, tests' TestClient) every request goes through the app: slower, not
different. Whether a key may predict is app.deps.admit's to say, on both paths.
"""

import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from pydantic import ValidationError
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr

from app.config import Settings, get_settings
from app.deps import admit
from app.keys import client_address
from app.routes.predict import predict_request, predictions_json
from app.serving import Served
from app.store.access import restricted_to
from app.store.tables import ApiKey

log = logging.getLogger("trainserve.past_asgi")
PATH = "/predict"
PREDICT = ("predict",)  # the scope of the route
JSON_HEADERS = b"content-type: application/json\r\ncontent-length: %d\r\n"


class PastAsgiLane:
    """The state the lane answers from: the app's, once its lifespan has started."""

    def __init__(self, app: FastAPI, settings: Settings):
        self.settings = settings
        self.state = app.state
        self.arrivals = app.state.model_server.arrivals
        # Bodies the protocol holds whole without pausing the socket, and the app accepts.
        self.max_body = min(HIGH_WATER_LIMIT, settings.max_upload_bytes)
        metrics = app.state.metrics
        self.latency = metrics.requests.labels(method="POST", route=PATH, status="200")
        self.answered, self.passed = (
            metrics.lane.labels(outcome=o) for o in ("answered", "passed")
        )

    @staticmethod
    def is_for(scope: Mapping[str, Any]) -> bool:
        return scope["method"] == "POST" and scope["path"] == PATH

    def takes(self, scope: Mapping[str, Any]) -> bool:
        """Whether a prediction may try the lane: no query, a small body of known length."""
        if scope["query_string"]:
            return False
        length = _header(scope, b"content-length")
        return length is not None and length.isdigit() and int(length) <= self.max_body

    def answer(self, cycle: RequestResponseCycle, pass_on: Callable[[], None]) -> bool:
        """Queue the request for its batch and answer it when the batch is done; False, having
        touched nothing, when the app must answer it. `pass_on` hands it to the app later."""
        started = time.perf_counter()
        scope = cycle.scope
        key = self._key(scope)
        if key is False:
            return False
        try:
            asked = predict_request(_header(scope, b"content-type") or "", bytes(cycle.body))
        except (HTTPException, ValidationError):
            return False
        # Only a name the key may read: another key's answers as unknown, through the app.
        served = self.state.model_server.loaded(asked.model_ref, asked.task, restricted_to(key))
        if served is None or served.version.task != asked.task:
            return False
        if key is not None and admit(key, PREDICT, self.state.rate_limits, self.settings):
            return False  # revoked, another scope, over its rate: the app answers why
        future = served.batcher.submit(asked.examples, asked.top_k)
        future.add_done_callback(partial(self._reply, cycle, served, asked.many, started, pass_on))
        return True

    def _key(self, scope: Mapping[str, Any]) -> ApiKey | Literal[False] | None:
        """The request's key if this process holds it; None with auth off; False for the
        app to answer (no key, one this process has not read yet, or an address refused for
        its failed authentications)."""
        if not self.settings.auth_enabled:
            return None
        if self.state.auth_failures.blocked(client_address(scope)):
            return False
        scheme, _, token = (_header(scope, b"authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        key = self.state.key_cache.cached(token)
        return False if key is None else key

    def _reply(self, cycle, served: Served, many: bool, started: float, pass_on, future) -> None:
        if cycle.disconnected or future.cancelled():
            return
        if future.exception() is not None:
            # A bad image: the app names it in its 422 (and counts it against the key's
            # rate a second time).
            self.pass_on(pass_on)
            return
        body = predictions_json(served, future.result(), many)
        _write(cycle, body)
        self.latency.observe(time.perf_counter() - started)
        self.answered.inc()

    def pass_on(self, pass_on: Callable[[], None]) -> None:
        self.passed.inc()
        pass_on()


class LaneProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the prediction lane (see the module's docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lane = _lane_of(_fastapi_app(self.app))
        # A request whose body is to come, with the lane it arrived at.
        self.waiting: tuple[PastAsgiLane, RequestResponseCycle, Callable] | None = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app) -> None:
        lane = self.lane if app is self.app and not self.pipeline else None
        if lane is None or not lane.is_for(cycle.scope):
            super()._start_asgi_task(cycle, app)
        elif cycle.waiting_for_100_continue or not lane.takes(cycle.scope):
            # The app's first receive() sends the 100 Continue such a client waits for.
            lane.pass_on(partial(super()._start_asgi_task, cycle, app))
        elif cycle.more_body:  # the body is on its way: on_message_complete goes on
            # Arriving, as through the app: a batch being formed waits for it, in budget.
            self.waiting = (lane, cycle, app)
            lane.arrivals.arrive()
        else:  # arrives and reaches its queue (or the app) in this one call
            self._answer(lane, cycle, app)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.waiting is not None and self.waiting[1] is self.cycle:
            (lane, cycle, app), self.waiting = self.waiting, None
            try:
                self._answer(lane, cycle, app)
            finally:
                lane.arrivals.leave()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting is not None:  # its body will not come
            lane, self.waiting = self.waiting[0], None
            lane.arrivals.leave()
        super().connection_lost(exc)

    def _answer(self, lane: PastAsgiLane, cycle: RequestResponseCycle, app) -> None:
        pass_on = partial(super()._start_asgi_task, cycle, app)
        try:
            answered = lane.answer(cycle, pass_on)
        except Exception:  # a bug here must not leave the client waiting: the app answers
            log.exception("the prediction lane failed; the app answers the request")
            answered = False
        if not answered:
            lane.pass_on(pass_on)


def _lane_of(api: FastAPI | None) -> PastAsgiLane | None:
    """The app's lane, made by the first connection: connections are accepted once the
    lifespan has started (None for an app that is not trainserve's)."""
    if api is None or not hasattr(api.state, "model_server"):
        return None
    if not hasattr(api.state, "past_asgi_lane"):
        api.state.past_asgi_lane = PastAsgiLane(api, get_settings())
    return api.state.past_asgi_lane


def _fastapi_app(app) -> FastAPI | None:
    """The FastAPI app inside uvicorn's wrappers (proxy headers, message logger)."""
    while app is not None and not isinstance(app, FastAPI):
        app = getattr(app, "app", None)
    return app


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """The first value of a header (uvicorn gives names in lower case)."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _write(cycle: RequestResponseCycle, body: bytes) -> None:
    """A 200 with a JSON body, as RequestResponseCycle.send writes one, then what uvicorn
    does when a response completes (keep-alive, the next pipelined request)."""
    head = [STATUS_LINE[200]]
    head += [b"%s: %s\r\n" % header for header in cycle.default_headers]
    head.append(JSON_HEADERS % len(body))
    if not cycle.keep_alive:
        head.append(b"connection: close\r\n")
    cycle.transport.write(b"".join(head) + b"\r\n" + body)
    cycle.response_started = cycle.response_complete = True
    if cycle.access_log:
        # uvicorn's AccessFormatter unpacks exactly these five arguments: any other list
        # raises inside logging, which prints a traceback per request and answers anyway.
        scope = cycle.scope
        cycle.access_logger.info(
            '%s - "%s %s HTTP/%s" %d',
            get_client_addr(scope),
            "POST",
            PATH,
            scope["http_version"],
            200,
        )
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
