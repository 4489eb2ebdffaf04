"""Job specs as `jobs submit` reads them: a JSON or YAML file, then `--set path=value`."""

import json
import sys
from pathlib import Path
from typing import Any

import typer
import yaml


class SpecError(ValueError):
    """A spec file or a --set that cannot be used; the message says which."""


def load_spec(source: str) -> dict[str, Any]:
    """The spec in a .json, .yaml or .yml file, or on standard input for `-` (JSON or YAML:
    YAML reads JSON too)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise SpecError(f"cannot read {source}: {exc.strerror}") from exc
    try:
        spec = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SpecError(f"{source} is not valid {_format_of(source)}: {exc}") from exc
    if not isinstance(spec, dict):
        raise SpecError(f"{source} holds no job spec: it should be an object of fields")
    return spec


def _format_of(source: str) -> str:
    return "JSON" if source.endswith(".json") else "YAML"


def parse_value(text: str) -> Any:
    """A --set value: JSON where it reads as JSON (0.01, 1e-3, true, null, [1, 2],
    {"patience": 2}), else the text itself (cosine, mnist-cnn). Quote a number to send it
    as text: name='"2024"'."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_sets(spec: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """The spec with each `dotted.path=value` set, nested objects made where missing; a new
    dict, the given one left as it was."""
    result = json.loads(json.dumps(spec))
    for assignment in assignments:
        path, value = _split(assignment)
        *parents, leaf = path
        target = result
        for depth, part in enumerate(parents):
            if target.get(part) is None:  # absent, or null: an object of its own now
                target[part] = {}
            target = target[part]
            if not isinstance(target, dict):
                where = ".".join(path[: depth + 1])
                raise SpecError(f"--set {assignment}: {where} is not an object of fields")
        target[leaf] = parse_value(value)
    return result


def _split(assignment: str) -> tuple[list[str], str]:
    path, equals, value = assignment.partition("=")
    parts = path.strip().split(".")
    if not equals or not all(parts):
        raise SpecError(f"--set {assignment!r}: write it as field.path=value")
    return parts, value


def spec_to_send(spec_file: str, sets: list[str] | None) -> dict[str, Any]:
    """The spec file with its --set values applied: a bad file or --set is the SPEC
    argument's error, as typer shows one."""
    try:
        return apply_sets(load_spec(spec_file), sets or [])
    except SpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="SPEC") from exc


def idempotency_headers(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}
