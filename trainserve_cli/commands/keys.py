"""trainserve keys create | list | revoke (an admin key's commands)"""

from typing import Annotated, Any

import typer

from trainserve_cli.context import api
from trainserve_cli.output import Cursor, JsonFlag, Limit, err, out, print_json, print_page

app = typer.Typer(help="API keys (admin scope): create, list, revoke.", no_args_is_help=True)
KEY_COLUMNS = ("id", "name", "scope", "prefix", "created", "revoked")


@app.command()
def create(
    ctx: typer.Context,
    # Not a fixed choice: the service says which scopes it has, in its 422 for another.
    scope: Annotated[str, typer.Option(help="What the key may do: admin, train, predict, …")],
    name: Annotated[str | None, typer.Option(help="What the key is for.")] = None,
    rate_limit: Annotated[
        float | None, typer.Option(help="Requests per second (default: the service's).")
    ] = None,
    max_concurrent_jobs: Annotated[
        int | None, typer.Option(help="Open jobs at once (default: the service's).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a key. Its token is printed this once: the service keeps only its hash."""
    body = {
        "scope": scope,
        "name": name,
        "rate_limit_per_second": rate_limit,
        "max_concurrent_jobs": max_concurrent_jobs,
    }
    key = api(ctx).post(
        "/keys", {field: value for field, value in body.items() if value is not None}
    )
    if as_json:
        print_json(key)
        return
    err.print(f"key {key['id']} ({key['scope']}); its token, shown only this once:", markup=False)
    out.print(key["key"], markup=False)  # alone on stdout: TOKEN=$(trainserve keys create …)


@app.command("list")
def list_keys(
    ctx: typer.Context, limit: Limit = 20, cursor: Cursor = None, as_json: JsonFlag = False
) -> None:
    """Keys, revoked ones included, newest first; tokens are never shown again."""
    page = api(ctx).get("/keys", limit=limit, cursor=cursor)
    print_page(page, KEY_COLUMNS, _key_row, as_json)


def _key_row(key: dict[str, Any]) -> tuple:
    return (
        key["id"],
        key["name"],
        key["scope"],
        key["prefix"],
        key["created_at"],
        key["revoked_at"],
    )


@app.command()
def revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key's id (not its token).")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke a key: it is refused from now on."""
    key = api(ctx).post(f"/keys/{key_id}/revoke")
    if as_json:
        print_json(key)
    else:
        out.print(f"key {key['id']} revoked at {key['revoked_at']}", markup=False)
