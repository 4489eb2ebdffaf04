"""The `trainserve` command: its groups, the root options, and errors as one line each."""

import sys
from typing import Annotated

import typer

from trainserve_cli.api import ApiError, Unreachable
from trainserve_cli.commands import datasets, jobs, keys, models, sweeps
from trainserve_cli.commands.login import login
from trainserve_cli.commands.predict import predict
from trainserve_cli.config import ConfigError
from trainserve_cli.context import RootOptions
from trainserve_cli.exits import ExitCode
from trainserve_cli.output import err

app = typer.Typer(
    help="Train PyTorch models on a trainserve service and serve their predictions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # an unforeseen error is a bug: its plain traceback
)
app.add_typer(datasets.app, name="datasets")
app.add_typer(jobs.app, name="jobs")
app.add_typer(sweeps.app, name="sweeps")
app.add_typer(models.app, name="models")
app.command()(predict)
app.add_typer(keys.app, name="keys")
app.command()(login)


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="TRAINSERVE_URL", help="The service (default: the saved one, or local)."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="TRAINSERVE_API_KEY", help="The key to send (default: the saved one)."),
    ] = None,
) -> None:
    ctx.obj = RootOptions(url, api_key)


def main() -> None:
    """The console script: the API's errors as their detail, an unreachable service as one
    line, each with its exit code (docs/cli.md#exit-codes)."""
    try:
        app()
    except ApiError as exc:
        _fail(ExitCode.API_ERROR, f"error {exc.status}: {exc}")
    except ConfigError as exc:
        _fail(ExitCode.API_ERROR, str(exc))
    except Unreachable as exc:
        _fail(ExitCode.UNREACHABLE, str(exc))


def _fail(code: ExitCode, message: str) -> None:
    err.print(message, markup=False)
    sys.exit(code)
