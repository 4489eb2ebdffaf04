"""trainserve login: check a key against the service and save both for later commands."""

from typing import Annotated

import typer

from trainserve_cli.api import Api, ApiError
from trainserve_cli.config import DEFAULT_URL, ConfigError, Connection, read_login, save_login
from trainserve_cli.context import RootOptions
from trainserve_cli.output import JsonFlag, out, print_json

DEFAULT_URL_HELP = "The service (default: --url, TRAINSERVE_URL, the saved one, or local)."


def login(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help=DEFAULT_URL_HELP)] = None,
    api_key: Annotated[
        str | None, typer.Option(help="The key (default: TRAINSERVE_API_KEY, else asked for).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check a key with the service, then save both to the login file (mode 0600)."""
    given: RootOptions = ctx.find_root().obj
    url = (url or given.url or _saved_or_default_url()).rstrip("/")
    api_key = api_key or given.api_key or typer.prompt("API key", hide_input=True)
    scope_note = _checked(Connection(url, api_key))
    path = save_login(url, api_key)
    if as_json:
        print_json({"url": url, "saved_to": str(path)})
    else:
        out.print(f"logged in to {url}{scope_note}; saved to {path}", markup=False)


def _saved_or_default_url() -> str:
    try:
        return read_login().get("url", DEFAULT_URL)
    except ConfigError:  # the file login is about to replace
        return DEFAULT_URL


def _checked(connection: Connection) -> str:
    """Refuse a key the service does not know (401); a key of a scope that may not list
    jobs (403) is a good key all the same, and said so."""
    try:
        Api(connection).get("/jobs", limit=1)
    except ApiError as exc:
        if exc.status != 403:
            raise
        return f" (this key may not train: {exc})"
    return ""
