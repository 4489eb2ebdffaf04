"""The OpenAPI document at /openapi.json, as OpenAPI 3.1 tooling reads it.

FastAPI's document lacks two things: the schemas of the bodies that routes read
themselves (/predict's, V2 infer's: their `requestBody` names them by `$ref`), which are
added here to `components/schemas`; and it writes an event stream's item schema as
`itemSchema`, a keyword of OpenAPI 3.2 that 3.1 validators refuse, which is kept here as
the extension `x-itemSchema` beside a plain string schema.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.schemas import ImagePredictForm, InferRequest, TextPredictRequest

# The request bodies read by the routes themselves rather than by FastAPI.
READ_BY_ROUTES: tuple[type[BaseModel], ...] = (TextPredictRequest, ImagePredictForm, InferRequest)
REF_TEMPLATE = "#/components/schemas/{model}"


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's document, made once and kept (as FastAPI's own `openapi()` does)."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(_schemas_of(READ_BY_ROUTES))
        _event_streams_as_3_1(document)
        app.openapi_schema = document
    return app.openapi_schema


def _schemas_of(models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=REF_TEMPLATE)
    return top.get("$defs", {})


def _event_streams_as_3_1(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                stream = response.get("content", {}).get("text/event-stream")
                if stream is not None and "itemSchema" in stream:
                    stream["x-itemSchema"] = stream.pop("itemSchema")
                    stream["schema"] = {
                        "type": "string",
                        "description": "Server-Sent Events, each as x-itemSchema describes.",
                    }
