"""trainserve predict FILE... | --text TEXT..."""

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from trainserve_cli.context import api
from trainserve_cli.output import JsonFlag, out, print_json, print_table


def predict(
    ctx: typer.Context,
    files: Annotated[
        list[Path] | None,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="Images to classify."),
    ] = None,
    text: Annotated[
        list[str] | None, typer.Option(help="A text to classify (repeat it for several).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="A version id, a job id, name@alias or a name (default: the newest)."),
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, max=100, help="Labels to show per input.")] = 3,
    as_json: JsonFlag = False,
) -> None:
    """Classify images or texts with a trained model."""
    if bool(files) == bool(text):
        raise typer.BadParameter("give image files or --text, one of the two")
    inputs = [str(path) for path in files] if files else list(text or [])
    answer = _images(ctx, files, model, top_k) if files else _texts(ctx, inputs, model, top_k)
    if as_json:
        print_json(answer)
        return
    predictions = answer if isinstance(answer, list) else [answer]
    rows = (
        (given, p["label"], ", ".join(f"{t['label']} {t['probability']:.4f}" for t in p["top_k"]))
        for given, p in zip(inputs, predictions, strict=True)
    )
    print_table(("input", "label", "top_k"), rows)
    first = predictions[0]
    out.print(f"answered by {first['model_name']} version {first['model_id']}", markup=False)


def _images(ctx: typer.Context, paths: list[Path], model: str | None, top_k: int) -> Any:
    """One image goes as `file` and gets one answer; several as `files`, a list."""
    field = "file" if len(paths) == 1 else "files"
    form = {"top_k": str(top_k)} | ({"model": model} if model else {})
    with ExitStack() as opened:
        parts = [(field, (path.name, opened.enter_context(path.open("rb")))) for path in paths]
        return api(ctx).request("POST", "/predict", files=parts, data=form).json()


def _texts(ctx: typer.Context, texts: list[str], model: str | None, top_k: int) -> Any:
    body: dict[str, Any] = {"text": texts[0]} if len(texts) == 1 else {"texts": texts}
    body["top_k"] = top_k
    if model:
        body["model"] = model
    return api(ctx).post("/predict", body)
