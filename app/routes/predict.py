"""Predictions: POST /predict (app/routes/v2.py: the KServe V2 protocol's infer).

Handlers are async and never run a network themselves: each request's examples go
to its model's batcher (app/batching.py), whose forward runs in a thread.
"""

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import ValidationError

from app.deps import key_of, require_scope
from app.multipart import MultipartError, TooManyParts, parse_multipart
from app.schemas import MAX_EXAMPLES, Prediction, TextPredictRequest, error
from app.serving import ModelServer, Served
from app.store.tables import ApiKey
from models.data import IMAGE_TASK, TEXT_TASK, DatasetError
from models.predictor import Ranked

# Requests reach /predict through app.past_router, past FastAPI's router, which runs the
# key check the route declares itself: it is included without app.main's.
predict_router = APIRouter(tags=["predict"], dependencies=[require_scope("predict")])

JSON = "application/json"
# Besides the images: 'model' and 'top_k'. The reader stops at this many parts.
MAX_PARTS = MAX_EXAMPLES + 2
# Bodies up to this are parsed on the event loop, larger ones in a thread: a hop costs
# about what parsing 64 KiB does, and a body of several MiB would hold every request up.
PARSE_ON_LOOP_BYTES = 64 * 1024
Parsed = TypeVar("Parsed")
MODEL_HELP = (
    "A model version id, a job id, `name@alias`, or a model name (its production alias, "
    "else latest), of the names this key may read. Default: the newest of those names "
    "for the task."
)
REQUEST_BODY = {
    # A body is needed (none is refused with a 4xx), but openapi-python-client 0.29 types
    # a required body of several media types as optional and then cannot import `Unset`.
    "required": False,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/TextPredictRequest"},
            "examples": {
                "one text": {"value": {"text": "a gripping, beautifully acted film"}},
                "several texts": {
                    "value": {"texts": ["dull and overlong", "a delight"], "model": "mr@production"}
                },
            },
        },
        "multipart/form-data": {
            "schema": {"$ref": "#/components/schemas/ImagePredictForm"},
            "examples": {"an image": {"value": {"file": "(a PNG or JPEG)", "top_k": 3}}},
        },
    },
}


@predict_router.post(
    "/predict",
    openapi_extra={"requestBody": REQUEST_BODY},
    response_model=Prediction | list[Prediction],
    responses={
        400: error("The multipart body cannot be parsed."),
        404: error("No such model or alias, or no model yet for the task."),
        415: error("Neither JSON nor multipart."),
        422: error("Bad fields, or a file that is not an image."),
    },
)
async def predict(request: Request) -> Response:
    """Classify images (multipart 'file' or 'files') or texts (JSON 'text' or 'texts')."""
    server: ModelServer = request.app.state.model_server
    content_type = request.headers.get("content-type", "")
    with server.arrivals.expect():
        body = await request.body()
        asked = await off_the_loop_if_big(predict_request, content_type, body)
        served = await resolve_for_task(server, asked, key_of(request))
        answer = served.batcher.submit(asked.examples, asked.top_k)
    ranked = await answers_of(answer, asked.field)
    return Response(predictions_json(served, ranked, asked.many), media_type=JSON)


@dataclass(frozen=True)
class PredictRequest:
    """What a /predict body asks for."""

    task: str
    examples: list[bytes] | list[str]
    many: bool  # a list was sent: a list comes back
    model_ref: str | None
    top_k: int

    @property
    def field(self) -> str:
        """The field that a bad example is named by in the 422."""
        return "files" if self.many and self.task == IMAGE_TASK else "file"


async def off_the_loop_if_big(
    parse: Callable[[str, bytes], Parsed], content_type: str, body: bytes
) -> Parsed:
    """parse(content_type, body), in a thread for a big body."""
    if len(body) <= PARSE_ON_LOOP_BYTES:
        return parse(content_type, body)
    return await asyncio.to_thread(parse, content_type, body)


def predict_request(content_type: str, body: bytes) -> PredictRequest:
    """The request a /predict body makes, by its content type; HTTPException for a bad one."""
    if content_type.startswith("multipart/form-data"):
        return _image_request(content_type, body)
    if content_type.startswith("application/json"):
        text = _text_request(body)
        return PredictRequest(
            TEXT_TASK, text.examples, text.texts is not None, text.model, text.top_k
        )
    raise HTTPException(
        415,
        "send an image as multipart/form-data (field 'file') or "
        "text as application/json ({'text': ...})",
    )


def predictions_json(served: Served, ranked: list[Ranked], many: bool) -> bytes:
    """The answer's body. Built by hand: validating it again would cost as much as the
    forward."""
    predictions = [_prediction(served, r) for r in ranked]
    return json.dumps(predictions if many else predictions[0]).encode()


def _image_request(content_type: str, body: bytes) -> PredictRequest:
    try:
        parts = parse_multipart(body, content_type, MAX_PARTS)
    except TooManyParts as exc:
        raise HTTPException(
            422, f"{exc}: 'files' takes at most {MAX_EXAMPLES} images a request"
        ) from exc
    except MultipartError as exc:
        raise HTTPException(400, str(exc)) from exc
    fields: dict[str, list[bytes]] = {}
    for name, data in parts:
        fields.setdefault(name, []).append(data)
    files, one = fields.get("files", []), fields.get("file", [])
    if files and one:
        raise HTTPException(422, "send either 'file' (one image) or 'files' (several), not both")
    if not files and len(one) != 1:
        raise HTTPException(422, "multipart field 'file' with one image is required")
    if len(files) > MAX_EXAMPLES:
        raise HTTPException(
            422, f"'files' takes at most {MAX_EXAMPLES} images a request, not {len(files)}"
        )
    top_k = fields.get("top_k", [b"3"])[0]
    if not top_k.isdigit() or not 1 <= int(top_k) <= 100:
        raise HTTPException(422, "top_k must be a whole number from 1 to 100")
    model_ref = fields["model"][0].decode() if fields.get("model", [b""])[0] else None
    return PredictRequest(IMAGE_TASK, files or one, bool(files), model_ref, int(top_k))


def _text_request(body: bytes) -> TextPredictRequest:
    try:
        return TextPredictRequest.model_validate_json(body)
    except ValidationError as exc:
        raise HTTPException(422, _errors(exc)) from exc


def _errors(exc: ValidationError) -> list[dict]:
    return [{k: e[k] for k in ("loc", "msg", "type")} for e in exc.errors()]


async def resolve_for_task(
    server: ModelServer, asked: PredictRequest, key: ApiKey | None
) -> Served:
    """The served version the request names, if it is of the request's task (else 422)."""
    served = await server.resolve(asked.model_ref, asked.task, key)
    if served.version.task != asked.task:
        raise HTTPException(
            422,
            f"model {asked.model_ref!r} is a {served.version.task} model; "
            f"this request is {asked.task}",
        )
    return served


async def answers_of(answer, field: str) -> list[Ranked]:
    try:
        return await answer
    except DatasetError as exc:
        raise HTTPException(422, f"{field}: {exc}") from exc


def _prediction(served: Served, ranked: Ranked) -> dict:
    """A Prediction (app/schemas.py), as a plain dict."""
    version = served.version
    return {
        "label": ranked[0][0],
        "top_k": [{"label": label, "probability": p} for label, p in ranked],
        "model_id": version.id,
        "job_id": version.job_id,
        "model_name": version.name,
    }
