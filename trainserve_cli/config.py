"""Where the service is and which key to send: --url / --api-key (or TRAINSERVE_URL /
TRAINSERVE_API_KEY), else the file `trainserve login` wrote, else a local service."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import click

DEFAULT_URL = "http://127.0.0.1:8000"  # where `make run` listens


class ConfigError(Exception):
    """The login file cannot be read: the message says which and what to do."""


@dataclass(frozen=True)
class Connection:
    url: str
    api_key: str | None


def config_path() -> Path:
    """$XDG_CONFIG_HOME/trainserve/config.json (~/.config/… by default) on Linux; the
    platform's own folder for settings elsewhere."""
    return Path(click.get_app_dir("trainserve")) / "config.json"


def read_login() -> dict[str, str]:
    """What `trainserve login` saved: {"url", "api_key"}, or nothing."""
    path = config_path()
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path} ({exc}): run `trainserve login` again") from exc
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} holds no settings: run `trainserve login` again")
    return saved


def connection(url: str | None, api_key: str | None) -> Connection:
    """The service to talk to. The saved key is sent only to the saved URL: a key is never
    handed to another server because TRAINSERVE_URL points elsewhere."""
    saved = read_login()
    saved_url = saved.get("url", DEFAULT_URL).rstrip("/")
    chosen = (url or saved_url).rstrip("/")
    if api_key is None and chosen == saved_url:
        api_key = saved.get("api_key")
    return Connection(chosen, api_key)


def save_login(url: str, api_key: str) -> Path:
    """Write the login file, readable by its owner only (mode 0600), in one step: a reader
    never sees half a file, nor the key in a file of wider mode."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an older partial file may have had another mode
    with os.fdopen(descriptor, "w") as file:
        json.dump({"url": url.rstrip("/"), "api_key": api_key}, file)
    partial.replace(path)
    return path
