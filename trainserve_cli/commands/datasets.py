"""trainserve datasets upload | list | show"""

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from trainserve_cli.context import api
from trainserve_cli.output import (
    Cursor,
    JsonFlag,
    Limit,
    count,
    err,
    out,
    print_fields,
    print_json,
    print_page,
    print_table,
)

app = typer.Typer(help="Upload labelled data and look at it.", no_args_is_help=True)


@app.command()
def upload(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="An image zip, IDX files (images and labels), or a CSV/TSV/JSONL table.",
        ),
    ],
    name: Annotated[str | None, typer.Option(help="Default: the first file's name.")] = None,
    resize: Annotated[
        str | None, typer.Option(help="HEIGHTxWIDTH (or one number): resize every image.")
    ] = None,
    text_column: Annotated[str | None, typer.Option(help="A table's text column.")] = None,
    label_column: Annotated[str | None, typer.Option(help="A table's label column.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Upload a dataset, with a bar over the bytes sent (the same bytes: the same dataset)."""
    form = {
        "name": name,
        "resize": resize,
        "text_column": text_column,
        "label_column": label_column,
    }
    with _upload_bars() as bars, ExitStack() as files:
        parts = [
            ("file", (path.name, files.enter_context(bars.open(path, "rb", description=path.name))))
            for path in paths
        ]
        answer = api(ctx).request(
            "POST",
            "/datasets",
            files=parts,  # httpx streams each file from disk, so the bars follow the sending
            data={field: value for field, value in form.items() if value is not None},
        )
    dataset = answer.json()
    if as_json:
        print_json(dataset)
        return
    if answer.status_code == 200:
        out.print("these bytes were uploaded before: the same dataset")
    _print_dataset(dataset)


def _upload_bars() -> Progress:
    """One bar per file, on stderr: standard output keeps the answer alone."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_interactive,  # a pipe or a log file gets no frames of a bar
    )


@app.command("list")
def list_datasets(
    ctx: typer.Context, limit: Limit = 20, cursor: Cursor = None, as_json: JsonFlag = False
) -> None:
    """Datasets, newest first."""
    page = api(ctx).get("/datasets", limit=limit, cursor=cursor)
    columns = ("id", "name", "task", "format", "classes", "train", "test", "created")
    print_page(page, columns, _dataset_row, as_json)


def _dataset_row(dataset: dict[str, Any]) -> tuple:
    counts = dataset["counts"]
    return (
        dataset["id"],
        dataset["name"],
        dataset["task"],
        dataset["format"],
        len(dataset["classes"]),
        count(counts.get("train")),
        count(counts.get("test")),
        dataset["created_at"],
    )


@app.command()
def show(
    ctx: typer.Context,
    dataset_id: Annotated[str, typer.Argument(help="The dataset's id.")],
    as_json: JsonFlag = False,
) -> None:
    """One dataset: its classes and their examples per split."""
    dataset = api(ctx).get(f"/datasets/{dataset_id}")
    if as_json:
        print_json(dataset)
    else:
        _print_dataset(dataset)


def _print_dataset(dataset: dict[str, Any]) -> None:
    skipped = dataset["skipped"]
    print_fields(
        [
            ("id", dataset["id"]),
            ("name", dataset["name"]),
            ("task", dataset["task"]),
            ("format", dataset["format"]),
            ("size (bytes)", dataset["size_bytes"]),
            ("details", ", ".join(f"{k} {v}" for k, v in dataset["details"].items())),
            ("skipped", f"{skipped['hidden']} hidden, {skipped['not_an_image']} not images"),
            ("created", dataset["created_at"]),
        ]
    )
    out.print()
    splits = list(dataset["counts"])
    print_table(
        ("class", *splits),
        (
            [label, *(dataset["counts"][s].get(label, 0) for s in splits)]
            for label in dataset["classes"]
        ),
    )
