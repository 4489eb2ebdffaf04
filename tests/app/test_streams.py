"""A client leaving mid-stream is logged as one line; anything else still raises."""

import asyncio
import logging

import pytest
from anyio import BrokenResourceError

from app.streams import PeerGoneMidStream


def app_failing(after_start: bool, error: Exception):
    async def app(scope, receive, send):
        if after_start:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ExceptionGroup("task group", [error])

    return app


def call(app) -> list[dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.disconnect"}

    asyncio.run(PeerGoneMidStream(app)({"type": "http", "path": "/x"}, receive, send))
    return sent


def test_a_client_gone_after_the_response_started_is_one_log_line(caplog):
    caplog.set_level(logging.INFO, logger="trainserve.api")
    sent = call(app_failing(after_start=True, error=BrokenResourceError()))
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert caplog.messages == ["/x: the client left mid-response"]


def test_before_the_response_started_or_another_error_it_raises():
    with pytest.raises(ExceptionGroup):
        call(app_failing(after_start=False, error=BrokenResourceError()))
    with pytest.raises(ExceptionGroup):
        call(app_failing(after_start=True, error=ValueError("a bug")))
