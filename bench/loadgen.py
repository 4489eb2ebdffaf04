"""A small closed-loop HTTP/1.1 load generator: N keep-alive connections, prebuilt requests.

Each connection sends a request, reads the whole answer, and sends the next, so
`concurrency` requests are in flight at all times. Parsing is minimal (status line,
Content-Length or chunked), to keep the client's own CPU use low on a small machine.
"""

import asyncio
import itertools
import time
from dataclasses import dataclass, field


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


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    return status, body


class _Run:
    """What the connections of one run share."""

    def __init__(self, requests: list[bytes], total: int, concurrency: int, keep_bodies: int):
        self.requests, self.remaining = itertools.cycle(requests), total
        self.connected, self.concurrency = 0, concurrency
        self.all_connected, self.go = asyncio.Event(), asyncio.Event()
        self.deadline = 0.0
        self.result, self.keep_bodies = LoadResult(), keep_bodies


async def _connection(host: str, port: int, run: _Run) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    run.connected += 1
    if run.connected == run.concurrency:
        run.all_connected.set()
    await run.go.wait()  # every connection is open before the first request: latency is requests'
    result = run.result
    while run.remaining > 0 and time.perf_counter() < run.deadline:
        run.remaining -= 1
        request = next(run.requests)
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            status, body = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            result.errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
            continue
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if status == 200:
            result.latencies.append(time.perf_counter() - started)
            if len(result.bodies) < run.keep_bodies:
                result.bodies.append(body)
        else:
            result.errors += 1
    if writer is not None:
        writer.close()


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
    run = _Run(requests, total, concurrency, keep_bodies)
    connections = [asyncio.create_task(_connection(host, port, run)) for _ in range(concurrency)]
    await run.all_connected.wait()
    started = time.perf_counter()
    run.deadline = started + max_seconds
    run.go.set()
    await asyncio.gather(*connections)
    run.result.seconds = time.perf_counter() - started
    return run.result
