"""trainserve models list | show | alias list | set | rollback | history"""

from typing import Annotated, Any

import typer

from trainserve_cli.context import api
from trainserve_cli.output import (
    Cursor,
    JsonFlag,
    Limit,
    out,
    print_fields,
    print_json,
    print_page,
    print_table,
)

app = typer.Typer(help="The registry: model versions and their aliases.", no_args_is_help=True)
alias_app = typer.Typer(help="Aliases: move, roll back, and their history.", no_args_is_help=True)
app.add_typer(alias_app, name="alias")

ModelName = Annotated[str, typer.Argument(metavar="NAME", help="The model name: mnist-cnn.")]
AliasName = Annotated[str, typer.Argument(metavar="ALIAS", help="The alias: production.")]
MOVE_COLUMNS = ("moved", "action", "from", "to", "by")


@app.command("list")
def list_models(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only this name's versions.")] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
    as_json: JsonFlag = False,
) -> None:
    """Model versions, newest first."""
    page = api(ctx).get("/models", name=name, limit=limit, cursor=cursor)
    columns = ("id", "name", "network", "aliases", "val_accuracy", "job", "created")
    print_page(page, columns, _version_row, as_json)


def _version_row(version: dict[str, Any]) -> tuple:
    return (
        version["id"],
        version["name"],
        version["network"],
        version["aliases"],
        version["metrics"].get("val_accuracy"),
        version["job_id"],
        version["created_at"],
    )


@app.command()
def show(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="A version's id, or its job's.")],
    as_json: JsonFlag = False,
) -> None:
    """One version: its network, classes, metrics and aliases."""
    version = api(ctx).get(f"/models/{model_id}")
    if as_json:
        print_json(version)
        return
    metrics = version["metrics"]
    print_fields(
        [
            ("id", version["id"]),
            ("name", version["name"]),
            ("task", version["task"]),
            ("network", version["network"]),
            ("aliases", version["aliases"]),
            ("classes", version["classes"]),
            ("metrics", ", ".join(f"{k} {v}" for k, v in metrics.items())),
            ("job", version["job_id"]),
            ("created", version["created_at"]),
        ]
    )


@alias_app.command("list")
def list_aliases(ctx: typer.Context, name: ModelName, as_json: JsonFlag = False) -> None:
    """Where each alias of a name points now."""
    aliases = api(ctx).get(f"/models/{name}/aliases")
    if as_json:
        print_json(aliases)
        return
    rows = ((a["alias"], a["version_id"], a["moved_at"]) for a in aliases)
    print_table(("alias", "version", "moved"), rows)


@alias_app.command("set")
def set_alias(
    ctx: typer.Context,
    name: ModelName,
    alias: AliasName,
    version_id: Annotated[str, typer.Argument(help="A version of this name.")],
    as_json: JsonFlag = False,
) -> None:
    """Point an alias at a version: every API process serves it from then on."""
    _print_move(
        api(ctx).put(f"/models/{name}/aliases/{alias}", {"version_id": version_id}), as_json
    )


@alias_app.command()
def rollback(
    ctx: typer.Context, name: ModelName, alias: AliasName, as_json: JsonFlag = False
) -> None:
    """Move an alias back to where it pointed before its last move."""
    _print_move(api(ctx).post(f"/models/{name}/aliases/{alias}/rollback"), as_json)


@alias_app.command()
def history(
    ctx: typer.Context,
    name: ModelName,
    alias: AliasName,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many moves (1-1000).")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Every move of an alias, newest first."""
    moves = api(ctx).get(f"/models/{name}/aliases/{alias}/history", limit=limit)
    if as_json:
        print_json(moves)
    else:
        print_table(MOVE_COLUMNS, (_move_row(move) for move in moves))


def _print_move(move: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(move)
    else:
        out.print(
            f"{move['name']}@{move['alias']} {move['action']}: "
            f"{move['from_version_id'] or '(new)'} -> {move['to_version_id']}",
            markup=False,
        )


def _move_row(move: dict[str, Any]) -> tuple:
    return (
        move["moved_at"],
        move["action"],
        move["from_version_id"],
        move["to_version_id"],
        move["moved_by"],
    )
