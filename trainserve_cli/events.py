"""A job's event stream (GET /jobs/{id}/events, Server-Sent Events) from its first event to
its final status, across dropped connections: each reconnect sends Last-Event-ID, so no
event is missed or seen twice."""

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from trainserve_cli.api import UNAVAILABLE, Api, ApiError, Unreachable, error_of
from trainserve_cli.exits import ENDED

# Events can be minutes apart (a long validation pass), so a read never times out; the
# server ends the stream after the final status.
STREAM_TIMEOUT = httpx.Timeout(None, connect=10)
FIRST_RETRY_S, LONGEST_RETRY_S = 0.5, 5.0


@dataclass(frozen=True)
class JobEvent:
    id: int
    kind: str  # status, step or epoch
    data: dict[str, Any]

    @property
    def is_final(self) -> bool:
        return self.kind == "status" and self.data.get("status") in ENDED

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "event": self.kind, "data": self.data}


# Called before each reconnect: what broke and the last event id seen (0: none yet).
OnRetry = Callable[[str, int], None]


def job_events(api: Api, job_id: str, retry_for: float, on_retry: OnRetry) -> Iterator[JobEvent]:
    """Every event of the job, in order, until its final status. A dropped connection (or
    the API answering 502-504 while it restarts) is retried with growing pauses until
    `retry_for` seconds have passed since it was lost; then Unreachable is raised."""
    last_id, lost_since, pause = 0, None, FIRST_RETRY_S
    while True:
        try:
            for event in _stream(api, job_id, last_id):
                last_id, lost_since, pause = event.id, None, FIRST_RETRY_S
                yield event
                if event.is_final:
                    return
            problem = "the stream ended before the job did"
        except (httpx.TransportError, SSEError) as exc:
            problem = str(exc) or type(exc).__name__  # some httpx errors have no message
        except ApiError as exc:
            if exc.status not in UNAVAILABLE:
                raise
            problem = str(exc)
        lost_since = lost_since or time.monotonic()
        if time.monotonic() - lost_since > retry_for:
            raise Unreachable(api.url, f"the event stream stays lost: {problem}")
        on_retry(problem, last_id)
        time.sleep(pause)
        pause = min(pause * 2, LONGEST_RETRY_S)


def _stream(api: Api, job_id: str, after: int) -> Iterator[JobEvent]:
    headers = {"Last-Event-ID": str(after)} if after else {}
    path = f"/jobs/{job_id}/events"
    with connect_sse(api.http, "GET", path, headers=headers, timeout=STREAM_TIMEOUT) as source:
        if source.response.is_error:
            source.response.read()
            raise error_of(source.response)
        for sse in source.iter_sse():
            if not sse.data:  # a keep-alive ping: httpx-sse yields it with the last id
                continue
            yield JobEvent(int(sse.id), sse.event, json.loads(sse.data))
