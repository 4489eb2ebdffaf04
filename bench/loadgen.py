"""A small closed-loop HTTP/1.1 load generator: N keep-alive connections, prebuilt requests.

Each connection sends a request, reads the whole answer, and sends the next, so
`concurrency` requests are in flight at all times. It shares the machine's cores with
the servers it measures, so it spends as little as it can per request: each connection
is an asyncio Protocol whose callback parses what arrived and sends the next request
(no coroutine, stream or task per request), on uvloop where it is installed, and
parsing is minimal (status line, Content-Length or chunked).
"""

import asyncio
import itertools
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field

try:
    import uvloop
except ImportError:  # uvicorn[standard] brings it on Linux and macOS
    uvloop = None


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)  # the first answers, to read

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(coroutine: Coroutine):
    """asyncio.run, on uvloop where it is installed: the client's own CPU per request is
    half of asyncio's."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
        return runner.run(coroutine)


def http_request(
    host: str, port: int, path: str, body: bytes, content_type: str, headers: str = ""
) -> bytes:
    """A keep-alive POST; `headers`: more header lines, each ending in CRLF."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n{headers}\r\n"
    )
    return head.encode() + body


def multipart(fields: dict[str, bytes | str], boundary: str = "benchb0undary") -> tuple[bytes, str]:
    parts = []
    for name, value in fields.items():
        if isinstance(value, bytes):
            disposition = f'form-data; name="{name}"; filename="{name}.png"'
            parts.append(
                f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                f"Content-Type: image/png\r\n\r\n".encode()
                + value
                + b"\r\n"
            )
        else:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def parse_response(buffer: bytes) -> tuple[int, bytes, int] | None:
    """(status, body, bytes used) of the first whole response in `buffer`, or None while
    it is incomplete. Raises ValueError for what is not HTTP/1.1."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end].lower()
    status = int(head[9:12])
    start = end + 4
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
        if len(buffer) < start + length:
            return None
        return status, buffer[start : start + length], start + length
    if b"\r\ntransfer-encoding: chunked" in head:
        return _chunked(buffer, status, start)
    return status, b"", start


def _chunked(buffer: bytes, status: int, at: int) -> tuple[int, bytes, int] | None:
    chunks = []
    while True:
        size_end = buffer.find(b"\r\n", at)
        if size_end < 0:
            return None
        size = int(buffer[at:size_end].split(b";")[0], 16)
        if size == 0:
            end = buffer.find(b"\r\n", size_end + 2)  # no trailers: the blank line after 0
            return None if end < 0 else (status, b"".join(chunks), end + 2)
        if len(buffer) < size_end + 2 + size + 2:
            return None
        chunks.append(buffer[size_end + 2 : size_end + 2 + size])
        at = size_end + 2 + size + 2


class _Run:
    """What the connections of one run share."""

    def __init__(self, host: str, port: int, requests: list[bytes], total: int, keep_bodies: int):
        self.host, self.port = host, port
        self.requests, self.remaining = itertools.cycle(requests), total
        self.deadline = 0.0
        self.result, self.keep_bodies = LoadResult(), keep_bodies
        self.open = 0
        self.loop = asyncio.get_running_loop()
        self.finished = self.loop.create_future()

    async def connect(self) -> "_Connection":
        _, connection = await self.loop.create_connection(
            lambda: _Connection(self), self.host, self.port
        )
        return connection

    def take(self) -> bytes | None:
        """The next request to send, or None once the run is over."""
        if self.remaining <= 0 or time.perf_counter() >= self.deadline:
            return None
        self.remaining -= 1
        return next(self.requests)

    def closed(self, failed: bool) -> None:
        """A connection closed; one that failed is replaced while the run goes on."""
        if failed:
            self.result.errors += 1
            if self.remaining > 0 and time.perf_counter() < self.deadline:
                self.loop.call_later(0.01, lambda: self.loop.create_task(self._reconnect()))
                return
        self.open -= 1
        if self.open == 0 and not self.finished.done():
            self.finished.set_result(None)

    async def _reconnect(self) -> None:
        try:
            connection = await self.connect()
        except OSError:
            self.closed(failed=True)
            return
        connection.send_next()


class _Connection(asyncio.Protocol):
    """One keep-alive connection, sending its next request from the callback that read
    the last answer."""

    def __init__(self, run: _Run):
        self.run, self.buffer, self.started = run, b"", 0.0
        self.waiting = False  # a request is sent and its whole answer not read yet
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def send_next(self) -> None:
        request = self.run.take()
        if request is None:
            self.transport.close()
            return
        self.started, self.waiting = time.perf_counter(), True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            answer = parse_response(self.buffer)
        except ValueError:
            self.fail()
            return
        if answer is None:
            return
        status, body, used = answer
        self.buffer, self.waiting = self.buffer[used:], False
        self.record(status, body)
        self.send_next()

    def record(self, status: int, body: bytes) -> None:
        result = self.run.result
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if status != 200:
            result.errors += 1
            return
        result.latencies.append(time.perf_counter() - self.started)
        if len(result.bodies) < self.run.keep_bodies:
            result.bodies.append(body)

    def fail(self) -> None:
        self.transport.abort()  # connection_lost counts the error

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.closed(failed=self.waiting)


async def run_load(
    host: str,
    port: int,
    requests: list[bytes],
    concurrency: int,
    total: int,
    max_seconds: float = 600,
    keep_bodies: int = 200,
) -> LoadResult:
    """Send `total` requests (cycling through `requests`) over `concurrency` connections."""
    run = _Run(host, port, requests, total, keep_bodies)
    # Every connection is open before the first request: latency is requests', not connects'.
    connections = [await run.connect() for _ in range(concurrency)]
    run.open = concurrency
    started = time.perf_counter()
    run.deadline = started + max_seconds
    for connection in connections:
        connection.send_next()
    await run.finished
    run.result.seconds = time.perf_counter() - started
    return run.result
