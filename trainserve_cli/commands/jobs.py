"""trainserve jobs submit | list | show | cancel | follow | wait"""

import math
import time
from typing import Annotated, Any

import typer

from trainserve_cli.api import Api
from trainserve_cli.context import api
from trainserve_cli.exits import ENDED, exit_code_of
from trainserve_cli.follow import follow, outcome
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
from trainserve_cli.specs import idempotency_headers, spec_to_send

app = typer.Typer(help="Train: submit jobs, follow them, wait for them.", no_args_is_help=True)

JobId = Annotated[str, typer.Argument(help="The job's id.")]
RetryFor = Annotated[
    float,
    typer.Option(min=0, help="How long to keep reconnecting to a lost event stream, in seconds."),
]
FOLLOW_HELP = (
    "Exit code: 0 succeeded, 4 failed on its spec or data, 5 failed after its attempts, "
    "6 cancelled, 3 the service stayed unreachable."
)


@app.command()
def submit(
    ctx: typer.Context,
    spec_file: Annotated[
        str, typer.Argument(metavar="SPEC", help="A .json or .yaml spec; - reads stdin.")
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="FIELD.PATH=VALUE",
            help="Set a field of the spec (repeat it): hyperparameters.lr=0.01. Values are "
            "JSON where they read as JSON, else text.",
        ),
    ] = None,
    follow_: Annotated[
        bool, typer.Option("--follow", help="Follow it until it ends (see `jobs follow`).")
    ] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Sending the same spec with it again gives the same job.")
    ] = None,
    retry_for: RetryFor = 300,
    as_json: JsonFlag = False,
) -> None:
    """Submit a job spec (docs/api.md#jobs lists its fields)."""
    spec = spec_to_send(spec_file, set_)
    headers = idempotency_headers(idempotency_key)
    client = api(ctx)
    job = client.post("/jobs", spec, headers=headers)
    if as_json:
        print_json(job, one_line=follow_)  # followed: the first of the JSON lines
    elif not follow_:  # followed: the follow's first line names the job
        out.print(f"job {job['id']} {job['status']}: {job['name']}, {job['arch']}", markup=False)
    if follow_:
        raise typer.Exit(_follow(client, job["id"], as_json=as_json, retry_for=retry_for))


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None, typer.Option(help="Only jobs of this status (repeat it for several).")
    ] = None,
    task: Annotated[str | None, typer.Option(help="Only jobs of this task.")] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
    as_json: JsonFlag = False,
) -> None:
    """Jobs, newest first."""
    page = api(ctx).get("/jobs", status=status, task=task, limit=limit, cursor=cursor)
    columns = ("id", "name", "arch", "status", "epochs", "best val_accuracy", "created")
    print_page(page, columns, _job_row, as_json)


def _job_row(job: dict[str, Any]) -> tuple:
    return (
        job["id"],
        job["name"],
        job["arch"],
        job["status"],
        f"{job['epoch']}/{job['epochs']}",
        job["best_val_accuracy"],
        job["created_at"],
    )


@app.command()
def show(ctx: typer.Context, job_id: JobId, as_json: JsonFlag = False) -> None:
    """One job: where it stands, its epochs, its model or its error."""
    job = api(ctx).get(f"/jobs/{job_id}")
    if as_json:
        print_json(job)
        return
    print_fields(
        [
            ("id", job["id"]),
            ("name", job["name"]),
            ("task", job["task"]),
            ("arch", job["arch"]),
            ("dataset", job["dataset_id"]),
            ("status", job["status"]),
            ("end reason", job["end_reason"]),
            ("attempt", f"{job['attempt']} of {job['max_attempts']}"),
            ("epochs", f"{job['epoch']}/{job['epochs']}"),
            ("best", f"val_accuracy {job['best_val_accuracy']} at epoch {job['best_epoch']}"),
            ("model", job["model_id"]),
            ("device", job["device"]),
            ("error", job["error"]),
            ("created", job["created_at"]),
            ("started", job["started_at"]),
            ("finished", job["finished_at"]),
            ("duration (s)", job["duration_seconds"]),
        ]
    )
    if job["history"]:
        out.print()
        columns = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")
        print_table(columns, ([entry[c] for c in columns] for entry in job["history"]))


@app.command()
def cancel(ctx: typer.Context, job_id: JobId, as_json: JsonFlag = False) -> None:
    """Cancel a job: a queued one never starts, a running one stops at its next step."""
    job = api(ctx).post(f"/jobs/{job_id}/cancel")
    if as_json:
        print_json(job)
    else:
        out.print(f"job {job['id']} {job['status']}", markup=False)


@app.command("follow", help=f"Follow a job live until it ends. {FOLLOW_HELP}")
def follow_job(
    ctx: typer.Context,
    job_id: JobId,
    retry_for: RetryFor = 300,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON line per event: {id, event, data}.")
    ] = False,
) -> None:
    raise typer.Exit(_follow(api(ctx), job_id, as_json=as_json, retry_for=retry_for))


def _follow(client: Api, job_id: str, *, as_json: bool, retry_for: float) -> int:
    """The job's exit code once it has ended; Ctrl-C stops following, not the job."""
    try:
        return follow(client, job_id, as_json=as_json, retry_for=retry_for)
    except KeyboardInterrupt:
        out.print(f"stopped following; the job goes on: trainserve jobs follow {job_id}")
        return 130  # the shell's code for an interrupt


@app.command(help=f"Wait for a job to end. {FOLLOW_HELP} 7 --timeout passed first.")
def wait(
    ctx: typer.Context,
    job_id: JobId,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Give up after this many seconds (exit 7).")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between looks.")] = 2.0,
    as_json: JsonFlag = False,
) -> None:
    client = api(ctx)
    deadline = None if timeout is None else time.monotonic() + timeout
    job = client.get(f"/jobs/{job_id}")
    while job["status"] not in ENDED:
        left = math.inf if deadline is None else deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(interval, left))
        job = client.get(f"/jobs/{job_id}")
    if as_json:
        print_json(job)
    else:
        out.print(outcome(job), markup=False)
    raise typer.Exit(exit_code_of(job))
