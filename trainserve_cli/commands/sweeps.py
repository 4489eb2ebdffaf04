"""trainserve sweeps submit | list | show | cancel | follow"""

import time
from typing import Annotated, Any

import typer

from trainserve_cli.api import Api
from trainserve_cli.context import api
from trainserve_cli.exits import ExitCode
from trainserve_cli.output import Cursor, JsonFlag, Limit, out, print_json, print_page, print_table
from trainserve_cli.specs import idempotency_headers, spec_to_send

app = typer.Typer(help="Tune: hyper-parameter sweeps, whose trials are jobs.", no_args_is_help=True)

SweepId = Annotated[str, typer.Argument(help="The sweep's id.")]
Interval = Annotated[float, typer.Option(min=0.1, help="Seconds between looks.")]
FOLLOW_HELP = "Exit code: 0 succeeded, 5 failed (no trial produced a model), 6 cancelled."
TRIAL_COLUMNS = ("trial", "status", "end", "epochs", "objective", "params")


@app.command(help=f"Submit a sweep spec (docs/api.md#sweeps lists its fields). {FOLLOW_HELP}")
def submit(
    ctx: typer.Context,
    spec_file: Annotated[
        str, typer.Argument(metavar="SPEC", help="A .json or .yaml sweep spec; - reads stdin.")
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="FIELD.PATH=VALUE",
            help="Set a field of the sweep spec (repeat it): max_trials=32, base.seed=1.",
        ),
    ] = None,
    follow_: Annotated[
        bool, typer.Option("--follow", help="Print each trial as it ends, until the sweep ends.")
    ] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Sending the same spec with it again gives the same sweep.")
    ] = None,
    interval: Interval = 2.0,
    as_json: JsonFlag = False,
) -> None:
    spec = spec_to_send(spec_file, set_)
    headers = idempotency_headers(idempotency_key)
    client = api(ctx)
    sweep = client.post("/sweeps", spec, headers=headers)
    if as_json:
        print_json(sweep, one_line=follow_)  # followed: the first of the JSON lines
    else:
        out.print(f"sweep {sweep['id']} {sweep['status']}: {sweep['name']}", markup=False)
    if follow_:
        raise typer.Exit(_follow(client, sweep["id"], interval, as_json))


@app.command("follow", help=f"Print each trial of a sweep as it ends. {FOLLOW_HELP}")
def follow_sweep(
    ctx: typer.Context, sweep_id: SweepId, interval: Interval = 2.0, as_json: JsonFlag = False
) -> None:
    raise typer.Exit(_follow(api(ctx), sweep_id, interval, as_json))


def _follow(client: Api, sweep_id: str, interval: float, as_json: bool) -> int:
    """Each trial's line once it ends (JSON lines with --json), and the best so far; the
    sweep's exit code once it ends. Ctrl-C stops following, not the sweep."""
    told: set[int] = set()
    try:
        while True:
            sweep = client.get(f"/sweeps/{sweep_id}")
            for trial in sweep["trials"]:
                if (
                    trial["status"] in ("succeeded", "failed", "cancelled")
                    and trial["number"] not in told
                ):
                    told.add(trial["number"])
                    _print_trial(trial, sweep["best_trial"], as_json)
            if sweep["status"] != "running":
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        out.print(f"stopped following; the sweep goes on: trainserve sweeps show {sweep_id}")
        return 130
    if as_json:
        print_json(sweep, one_line=True)
    else:
        out.print(_outcome(sweep), markup=False)
    return _exit_code(sweep)


def _print_trial(trial: dict[str, Any], best: dict[str, Any] | None, as_json: bool) -> None:
    if as_json:
        print_json(trial, one_line=True)
        return
    reason = trial["end_reason"] or ""
    if trial["pruned_at_epoch"] is not None:
        reason = f"pruned after {trial['pruned_at_epoch']:.3g} epochs"
    mark = " (best so far)" if best and best["number"] == trial["number"] else ""
    line = f"trial {trial['number']} {trial['status']}: {reason}, objective {trial['objective']}"
    out.print(f"{line}{mark} {trial['params']}", markup=False)


def _outcome(sweep: dict[str, Any]) -> str:
    best = sweep["best_trial"]
    done = f"sweep {sweep['id']} {sweep['status']} after {len(sweep['trials'])} trials"
    if best is None:
        return f"{done}: {sweep['error'] or 'no best trial'}"
    return (
        f"{done}, {sweep['epochs_trained']:.3g} epochs: best trial {best['number']}, objective "
        f"{best['objective']}, model {sweep['name']}@best {best['params']}"
    )


def _exit_code(sweep: dict[str, Any]) -> int:
    return {
        "succeeded": ExitCode.OK,
        "cancelled": ExitCode.JOB_CANCELLED,
    }.get(sweep["status"], ExitCode.JOB_FAILED)


@app.command("list")
def list_sweeps(
    ctx: typer.Context, limit: Limit = 20, cursor: Cursor = None, as_json: JsonFlag = False
) -> None:
    """Sweeps, newest first."""
    page = api(ctx).get("/sweeps", limit=limit, cursor=cursor)
    columns = ("id", "name", "status", "created", "finished")
    print_page(page, columns, _sweep_row, as_json)


def _sweep_row(sweep: dict[str, Any]) -> tuple:
    return (sweep["id"], sweep["name"], sweep["status"], sweep["created_at"], sweep["finished_at"])


@app.command()
def show(ctx: typer.Context, sweep_id: SweepId, as_json: JsonFlag = False) -> None:
    """One sweep: its trials and the best so far."""
    sweep = api(ctx).get(f"/sweeps/{sweep_id}")
    if as_json:
        print_json(sweep)
        return
    out.print(
        _outcome(sweep) if sweep["status"] != "running" else f"sweep {sweep['id']} running",
        markup=False,
    )
    print_table(TRIAL_COLUMNS, (_trial_row(trial) for trial in sweep["trials"]))


def _trial_row(trial: dict[str, Any]) -> tuple:
    return (
        trial["number"],
        trial["status"],
        trial["end_reason"],
        f"{trial['epochs_trained']:.3g}",
        trial["objective"],
        trial["params"],
    )


@app.command()
def cancel(ctx: typer.Context, sweep_id: SweepId, as_json: JsonFlag = False) -> None:
    """Cancel a sweep: no trial starts after it; its queued and running trials are cancelled."""
    sweep = api(ctx).post(f"/sweeps/{sweep_id}/cancel")
    if as_json:
        print_json(sweep)
    else:
        out.print(f"sweep {sweep['id']} {sweep['status']}", markup=False)
