"""Servers the tests start as processes, on ports no other process can take meanwhile.

Binding port 0, closing it and handing the number to a server leaves a gap in which
another process (another test run on this machine) can take the port, and a readiness
probe would then talk to that process. Here the test binds the socket and the server
inherits it (uvicorn's documented `--fd`), so the port is held from the start.
"""

import socket
import subprocess
import sys
from collections.abc import Callable, Sequence

import httpx

from tests.conftest import PROJECT
from tests.utils.waiting import wait_until

# The API, less the address, which the inherited socket gives, and its HTTP protocol.
API_COMMAND = (sys.executable, "-m", "uvicorn", "app.main:app")
# uvicorn's --http for the prediction lane, as `make run` serves it.
LANE_PROTOCOL = ("--http", "app.past_asgi:PredictProtocol")


def bound_socket(port: int = 0) -> socket.socket:
    """A socket on a free local port (or on `port`: a restarted server's), bound but not
    listening: until the server listens, a readiness probe is refused at once instead of
    waiting in the backlog."""
    sock = socket.socket()
    # Accepted connections inherit this on Linux; uvicorn sets it only on sockets it
    # binds itself, and without it every keep-alive request waits ~40 ms (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # As uvicorn sets on the sockets it binds: a server started again on a killed one's port
    # binds it although that one's connections linger (FIN_WAIT, TIME_WAIT).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def start_api(
    env: dict[str, str] | None = None,
    stdout=subprocess.DEVNULL,
    args: Sequence[str] = LANE_PROTOCOL,
    port: int = 0,
) -> tuple[subprocess.Popen, str]:
    """An API process serving on a socket of its own (on `port` if given; with the lane
    unless `args` say otherwise); the process and its URL."""
    with bound_socket(port) as sock:
        process = subprocess.Popen(
            [*API_COMMAND, "--fd", str(sock.fileno()), *args],
            cwd=PROJECT,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            pass_fds=(sock.fileno(),),
            start_new_session=True,  # its own process group: a kill reaches its children
        )
        port = sock.getsockname()[1]
    return process, f"http://127.0.0.1:{port}"


def is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz").status_code == 200
    except httpx.TransportError:
        return False


def wait_until_ready(
    process: subprocess.Popen, url: str, log: Callable[[], str] = lambda: ""
) -> None:
    """Until the API answers /readyz; fails at once, with its log, if the process exits."""

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the API at {url} exited with {process.returncode}:\n{log()}")
        return is_ready(url)

    # Generous: on a loaded two-core machine an API's start (torch, the app) took over 60 s.
    wait_until(ready, timeout=180, what=lambda: f"the API at {url} to be ready:\n{log()}")
