"""What a request body may be before it is read: a key first (401), then a size that
depends on the route (413). Both answer JSON without reading a byte of the body.

(FastAPI's own max_body_size answers a plain-text "Content Too Large" instead, and
FastAPI reads and parses a body before it solves the dependencies that check the key.)
"""

import contextlib
import json
from dataclasses import dataclass

from fastapi import HTTPException, Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.deps import CHALLENGE, authenticate, bearer, unusable_key_refusal

UPLOAD_PATHS = ("/datasets",)
PREDICT_PATHS = ("/predict", "/explain")
INFER_PREFIX, INFER_SUFFIX = "/v2/models/", "/infer"


class BodyTooLarge(Exception):
    pass


@dataclass(frozen=True)
class BodyCap:
    max_bytes: int
    setting: str  # the environment variable that sets it, named in the 413


def body_cap(settings: Settings, path: str) -> BodyCap:
    """The largest body a route takes: uploads the upload limit, predictions theirs, and
    every other route (JSON: job specs, keys, alias moves) a small one."""
    if path in UPLOAD_PATHS:
        return BodyCap(settings.max_upload_bytes, "TRAINSERVE_MAX_UPLOAD_BYTES")
    if path in PREDICT_PATHS or (path.startswith(INFER_PREFIX) and path.endswith(INFER_SUFFIX)):
        return BodyCap(settings.max_predict_bytes, "TRAINSERVE_MAX_PREDICT_BYTES")
    return BodyCap(settings.max_json_bytes, "TRAINSERVE_MAX_JSON_BYTES")


def has_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    return b"transfer-encoding" in headers or headers.get(b"content-length", b"0") != b"0"


class KeyBeforeBody:
    """A request with a body and without a valid key (missing, unknown, revoked or expired)
    is answered 401 before its body is read, on every route: a stranger cannot make the API
    take in an upload's worth of bytes. Whether the key may call the route is still the
    route's check to say (403, 429)."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.settings.auth_enabled and has_body(scope):
            refusal = await _key_refusal(Request(scope))
            if refusal is not None:
                await send_json(send, refusal.status_code, {"detail": refusal.detail}, CHALLENGE)
                return
        await self.app(scope, receive, send)


async def _key_refusal(request: Request) -> HTTPException | None:
    try:
        key = await authenticate(request, await bearer(request))
    except HTTPException as exc:
        return exc
    except SQLAlchemyError:
        return None  # the database is down: the route's own check answers 503
    return None if key is None else unusable_key_refusal(key)


class BodySizeLimit:
    """Checks Content-Length up front against the route's cap, and counts the bytes of
    chunked bodies as they come."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = body_cap(self.settings, scope["path"])
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > cap.max_bytes:
            await _refuse(send, cap)
            return
        received = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > cap.max_bytes:
                # Answer here: a form parser may turn the exception into its own 400.
                if not started and not refused:
                    refused = True
                    await _refuse(send, cap)
                raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is already sent; drop what the app answers after it
            started = started or message["type"] == "http.response.start"
            await send(message)

        # Refused above, or the response had started and the client sees it cut short.
        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counting_receive, tracking_send)


async def _refuse(send: Send, cap: BodyCap) -> None:
    detail = f"request body is over the limit of {cap.max_bytes} bytes ({cap.setting})"
    await send_json(send, 413, {"detail": detail})


async def send_json(send: Send, status: int, content: dict, headers: dict | None = None) -> None:
    body = json.dumps(content).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    head += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
