"""What the root options (--url, --api-key) hand every command: the API to call."""

from dataclasses import dataclass

import typer

from trainserve_cli.api import Api
from trainserve_cli.config import connection


@dataclass(frozen=True)
class RootOptions:
    url: str | None
    api_key: str | None


def api(ctx: typer.Context) -> Api:
    """The API of the root options, the environment or the login file. Built on first use,
    so that `trainserve login` can replace a login file that cannot be read."""
    given: RootOptions = ctx.find_root().obj
    return Api(connection(given.url, given.api_key))
