"""A client that openapi-python-client generates from an OpenAPI document, as a user would
make one, and the document's operations that it sent requests for."""

import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from tests.conftest import ADMIN_KEY, PROJECT

OPENAPI_CLIENT = PROJECT / ".venv-openapi" / "bin" / "openapi-python-client"
PACKAGE = "trainserve_client"  # the generator's name for the document's title, trainserve
Operation = tuple[str, str]  # method and path template, as the document writes them


def operations_of(document: dict) -> set[Operation]:
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }


def generate(document: dict, folder: Path) -> Path:
    """The generated project's folder; fails on an error or any warning the generator (or the
    ruff it runs on its output) prints."""
    (folder / "openapi.json").write_text(json.dumps(document))
    path = f"{PROJECT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"  # its ruff hook
    generated = subprocess.run(
        [OPENAPI_CLIENT, "generate", "--path", "openapi.json", "--output-path", "client"],
        cwd=folder,
        env=os.environ | {"PATH": path},
        capture_output=True,
        text=True,
        check=False,
    )
    said = generated.stdout + generated.stderr
    assert generated.returncode == 0 and "warning" not in said.lower(), said
    return folder / "client"


class GeneratedClient:
    """The generated package, imported, with an admin key's client of it. `call` runs an
    operation's function; every request the client sends is matched to the one operation of
    the document it is for, and recorded in `requested`."""

    def __init__(self, document: dict, base_url: str):
        self.operations = {
            operation: _template_pattern(operation[1]) for operation in operations_of(document)
        }
        self.requested: set[Operation] = set()
        self.models = importlib.import_module(f"{PACKAGE}.models")
        self.types = importlib.import_module(f"{PACKAGE}.types")
        self.client = importlib.import_module(PACKAGE).AuthenticatedClient(
            base_url=base_url,
            token=ADMIN_KEY,
            timeout=httpx.Timeout(120),
            raise_on_unexpected_status=True,  # an answer the document does not list fails
            httpx_args={"event_hooks": {"request": [self._record]}},
        )

    def call(self, function: str, *args: Any, **kwargs: Any) -> Any:
        """The Response (status_code, parsed, content) of the operation's function
        `function` ("<tag>.<operation>"), given the client and these arguments."""
        return self.module(function).sync_detailed(*args, client=self.client, **kwargs)

    def module(self, function: str) -> ModuleType:
        return importlib.import_module(f"{PACKAGE}.api.{function}")

    def _record(self, request: httpx.Request) -> None:
        matching = [
            operation
            for operation, pattern in self.operations.items()
            if operation[0] == request.method and pattern.fullmatch(request.url.path)
        ]
        assert len(matching) == 1, f"{request.method} {request.url.path}: {matching}"
        self.requested |= set(matching)


def _template_pattern(template: str) -> re.Pattern[str]:
    """`/models/{model_id}/weights` as a pattern: each `{…}` one path segment."""
    literals = re.split(r"\{[^}/]+\}", template)
    return re.compile("[^/]+".join(re.escape(literal) for literal in literals))


@contextmanager
def generated_client(document: dict, folder: Path, base_url: str) -> Iterator[GeneratedClient]:
    """The client generated from `document` in `folder`, for the API at `base_url`; its
    modules are forgotten afterwards, so another generated one can be imported."""
    project = str(generate(document, folder))
    sys.path.insert(0, project)
    try:
        yield GeneratedClient(document, base_url)
    finally:
        sys.path.remove(project)
        for module in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[module]
