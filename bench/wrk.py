"""wrk (Debian's `wrk`, a C load generator) for the benches: run it, read its figures.

A C client on one thread leaves the cores to the server it measures, where a Python
client would take one of them. Both scripts cycle through what they are given, so the
server sees many different requests (paths, or whole prebuilt requests), not one.
"""

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# GET each path given after `--` in turn.
CYCLE_PATHS = """
local paths = {}
local next_path = 0
function init(args)
  for _, path in ipairs(args) do paths[#paths + 1] = path end
end
function request()
  next_path = next_path % #paths + 1
  return wrk.format("GET", paths[next_path])
end
"""
# Send each prebuilt HTTP request (a file each, named after `--`) in turn, byte for byte.
CYCLE_REQUESTS = """
local requests = {}
local next_request = 0
function init(args)
  for _, path in ipairs(args) do
    local file = assert(io.open(path, "rb"))
    requests[#requests + 1] = file:read("*a")
    file:close()
  end
end
function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end
"""


@dataclass
class LoadFigures:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors
    requests: int


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        sys.exit("this bench needs wrk, a C load generator: apt-get install wrk")


def paths_script(folder: Path, url: str, paths: list[str]) -> list[str]:
    """wrk's arguments for GETs of `paths` in turn, on the server at `url`."""
    script = folder / "cycle_paths.lua"
    script.write_text(CYCLE_PATHS)
    return ["-s", str(script), url, "--", *paths]


def requests_script(folder: Path, url: str, requests: list[bytes], name: str) -> list[str]:
    """wrk's arguments for sending the prebuilt `requests` in turn to the server at `url`."""
    script = folder / "cycle_requests.lua"
    script.write_text(CYCLE_REQUESTS)
    files = folder / f"requests-{name}"
    files.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, request in enumerate(requests):
        path = files / f"{i}.http"
        path.write_bytes(request)
        paths.append(str(path))
    return ["-s", str(script), url, "--", *paths]


def run_wrk(arguments: list[str], connections: int, seconds: float) -> LoadFigures:
    """One wrk run: one thread, `connections` keep-alive connections, for `seconds`."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", *arguments]
    finished = subprocess.run(command, capture_output=True, text=True)
    output = finished.stdout + finished.stderr
    latencies = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    if finished.returncode or len(latencies) < 2:
        sys.exit(f"could not read wrk's output:\n{output}")
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return LoadFigures(
        requests_per_s=float(re.search(r"Requests/sec:\s+(\S+)", output).group(1)),
        p50_ms=_milliseconds(latencies["50"]),
        p99_ms=_milliseconds(latencies["99"]),
        errors=(int(failed.group(1)) if failed else 0)
        + (sum(map(int, re.findall(r"\d+", socket_errors.group(1)))) if socket_errors else 0),
        requests=int(re.search(r"(\d+) requests in", output).group(1)),
    )


def _milliseconds(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]
