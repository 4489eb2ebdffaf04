"""What the commands print: tables and lines for people on standard output, the API's JSON
for scripts (--json), and errors and upload bars on standard error."""

import json
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

# Lines are never broken at the terminal's width: a long error or id stays whole when piped.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
if not out.is_terminal:  # a pipe or a file: a table's rows as wide as they are
    out.width = 10_000

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer, for scripts.")]
Limit = Annotated[int, typer.Option(min=1, max=200, help="How many to show (1-200).")]
Cursor = Annotated[str | None, typer.Option(help="Go on from an earlier page: its next_cursor.")]


def print_json(data: Any, *, one_line: bool = False) -> None:
    """JSON as the API sent it, never wrapped or coloured: what a script parses."""
    print(json.dumps(data, separators=(",", ":")) if one_line else json.dumps(data, indent=2))


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, show_header: bool = True
) -> None:
    """Rows under their column names. Nothing is cut: a narrow terminal folds a long value
    (an id) onto the next line, and a pipe gets each row on one line, however wide."""
    table = Table(box=None, header_style="bold", pad_edge=False, show_header=show_header)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        # Text, not markup: a name or an error with [brackets] is shown as it is.
        table.add_row(*(Text(shown(value)) for value in row))
    out.print(table)


def print_page(page: dict[str, Any], columns: Sequence[str], row_of, as_json: bool) -> None:
    """A list answer as a table, and how to ask for the next page when there is one; or
    as the API's JSON (`--json`)."""
    if as_json:
        print_json(page)
        return
    print_table(columns, (row_of(item) for item in page["items"]))
    if page.get("next_cursor"):
        err.print(f"[dim]more: --cursor {page['next_cursor']}[/dim]")


def print_fields(fields: Iterable[tuple[str, Any]]) -> None:
    """`name  value` lines, the values aligned."""
    print_table(("", ""), fields, show_header=False)


def shown(value: Any) -> str:
    """A value as a table cell: times to the second, ratios to four places, nothing blank."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, str) and len(value) > 19 and value[10:11] == "T":  # ISO-8601
        return value[:19].replace("T", " ")
    return str(value)


def count(examples: dict[str, int] | None) -> int:
    return sum((examples or {}).values())
