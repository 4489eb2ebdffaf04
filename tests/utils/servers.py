"""API processes the tests start, on ports no other process can take meanwhile.

Binding port 0, closing it and handing the number to a server leaves a gap in which
another process (another test run on this machine) can take the port, and a readiness
probe would then talk to that process. Here the test binds the port first and holds it
while the server runs: uvicorn inherits the socket (its documented `--fd`); Granian binds
the port itself with SO_REUSEPORT, which the held socket allows, as it allows no one
else.
"""

import socket
import subprocess
import sys
from collections.abc import Callable

import httpx

from tests.conftest import PROJECT
from tests.utils.waiting import wait_until

# The servers the API runs on: Granian, as `make run` and the image serve it, and uvicorn,
# the alternative docs/operations.md gives. Both with their access log on.
GRANIAN = "granian"
UVICORN = "uvicorn"


def bound_socket(shared: bool = False, port: int = 0) -> socket.socket:
    """A socket on a free local port (or on `port`: a restarted server's), bound but not
    listening: until the server listens, a readiness probe is refused at once instead of
    waiting in the backlog. `shared`: a server that sets SO_REUSEPORT may bind the port
    too."""
    sock = socket.socket()
    # Accepted connections inherit this on Linux; uvicorn sets it only on sockets it
    # binds itself, and without it every keep-alive request waits ~40 ms (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # As uvicorn sets on the sockets it binds: a server started again on a killed one's port
    # binds it although that one's connections linger (FIN_WAIT, TIME_WAIT).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def start_api(
    env: dict[str, str] | None = None,
    stdout=subprocess.DEVNULL,
    server: str = GRANIAN,
    log: Callable[[], str] = lambda: "",
    port: int = 0,
) -> tuple[subprocess.Popen, str]:
    """An API process on `server`, serving on a port of its own (on `port` if given), once
    it is ready; the process and its URL. `log`: what to show if it fails to start."""
    with bound_socket(shared=server == GRANIAN, port=port) as sock:
        port = sock.getsockname()[1]
        process = subprocess.Popen(
            _command(server, port, sock),
            cwd=PROJECT,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            pass_fds=(sock.fileno(),) if server == UVICORN else (),
            start_new_session=True,  # its own process group: a kill reaches its children
        )
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(process, url, log)  # Granian listens on the port: it is its own now
    return process, url


def _command(server: str, port: int, sock: socket.socket) -> list[str]:
    if server == GRANIAN:
        address = ["--host", "127.0.0.1", "--port", str(port)]
        granian = [sys.executable, "-m", "granian", "--interface", "asgi", "--access-log"]
        return [*granian, *address, "app.main:app"]
    return [sys.executable, "-m", "uvicorn", "app.main:app", "--fd", str(sock.fileno())]


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
