"""The command-line client run as users run it: a process of its own, talking HTTP."""

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import PROJECT

CLI = (sys.executable, "-m", "trainserve_cli")


def cli_env(config_home: Path, url: str | None, key: str | None) -> dict[str, str]:
    """The environment of a CLI run: the service and key given (or none), and a config folder
    of the test's own, so a developer's login file is neither read nor written."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRAINSERVE_URL", "TRAINSERVE_API_KEY")}
    env["XDG_CONFIG_HOME"] = str(config_home)
    if url:
        env["TRAINSERVE_URL"] = url
    if key:
        env["TRAINSERVE_API_KEY"] = key
    return env


def run_cli(
    *args: str,
    config_home: Path,
    url: str | None = None,
    key: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`trainserve ARGS`, its output captured; never checked: tests assert its exit code."""
    return subprocess.run(
        [*CLI, *args],
        cwd=PROJECT,
        env=cli_env(config_home, url, key),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def json_of(run: subprocess.CompletedProcess[str]) -> Any:
    """The --json answer of a run that worked."""
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    return json.loads(run.stdout)


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON lines of `jobs follow --json`."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run_in_terminal(*args: str, config_home: Path, url: str, key: str) -> tuple[int, str]:
    """`trainserve ARGS` on a terminal of 120 columns (a pseudo-terminal), as a person sees
    it: its exit code and everything it drew, escape sequences included."""
    env = cli_env(config_home, url, key) | {"TERM": "xterm-256color", "COLUMNS": "120"}
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*CLI, *args], cwd=PROJECT, env=env, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    drawn = []
    while True:
        try:
            chunk = os.read(controller, 1 << 16)
        except OSError:  # EIO: the process has closed the terminal
            break
        if not chunk:
            break
        drawn.append(chunk)
    os.close(controller)
    return process.wait(timeout=60), b"".join(drawn).decode(errors="replace")
