"""The KServe V2 inference protocol (Open Inference Protocol) for every model /predict
serves: server health and metadata, model metadata and readiness, and infer, each model
route with and without `/versions/{version}`. app/kserve.py reads and writes the bodies;
app.kserve.V2ErrorBodies gives every error under /v2 the protocol's `{"error": ...}`.

`{model}` is anything /predict's `model` takes; `{version}` a version id (or its job's id)
of that model's name.
"""

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app import kserve
from app.deps import CeleryDep, ModelServerDep, SessionDep, key_of, require_scope
from app.routes import health
from app.routes.predict import answers_of, off_the_loop_if_big
from app.schemas import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ModelReady,
    Responses,
    ServerLive,
    ServerMetadata,
    ServerReady,
    v2_error,
)
from app.serving import ModelServer, Served, UnknownModel
from models.data import IMAGE_TASK

TAGS: list = ["kserve-v2"]
# No key, as /healthz and /readyz: load balancers and clients probe them.
health_router = APIRouter(tags=TAGS)
router = APIRouter(tags=TAGS)  # app.main includes it behind the predict scope
# Infer, as /predict, reaches its endpoints through app.past_router (past FastAPI's router),
# which runs the key check the router declares itself.
infer_router = APIRouter(tags=TAGS, dependencies=[require_scope("predict")])
MODEL = "/v2/models/{model}"
VERSION = "/v2/models/{model}/versions/{version}"
NO_MODEL: Responses = {
    404: v2_error("No such model, alias or version, or not one this key may read.")
}
# A text as binary BYTES data: its 4-byte little-endian length, then its bytes.
BINARY_HEADER = (
    '{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", '
    '"parameters": {"binary_data_size": 8}}]}'
)
BINARY_EXAMPLE = BINARY_HEADER + "\u0004\u0000\u0000\u0000dull"
INFER_BODY = {
    # Required, as the route refuses a request without one. app/openapi.py says why
    # openapi-python-client can generate it here but not for /predict's.
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/InferRequest"},
            "examples": {"two texts": {"value": InferRequest.model_json_schema()["examples"][0]}},
        },
        "application/octet-stream": {
            "schema": {
                "type": "string",
                "format": "binary",
                "description": "The binary tensor data extension: the JSON header (its "
                "length in Inference-Header-Content-Length), then the input's data.",
            },
            "examples": {"one text as binary data": {"value": BINARY_EXAMPLE}},
        },
    },
}
# Read by the route itself (app.past_router runs no FastAPI parameters); a client
# generated from the document sends it with a binary body.
HEADER_LENGTH_PARAMETER = {
    "name": kserve.HEADER_LENGTH,
    "in": "header",
    "required": False,
    "description": "With the binary tensor data extension (an application/octet-stream "
    "body): how many bytes of the body are its JSON part.",
    "schema": {"type": "integer", "minimum": 0},
}
INFER_EXTRA = {"requestBody": INFER_BODY, "parameters": [HEADER_LENGTH_PARAMETER]}
INFER_RESPONSES: Responses = {
    200: {
        "model": InferResponse,
        "content": {
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "Outputs asked for as binary data: the JSON header (its "
                    "length in Inference-Header-Content-Length), then their data.",
                }
            }
        },
    },
    **NO_MODEL,
    400: v2_error("An Inference-Header-Content-Length that does not fit the body."),
    422: v2_error("An input, shape, datatype or output this model does not take."),
}


@health_router.get("/v2/health/live")
def server_live() -> ServerLive:
    """The process is alive."""
    return ServerLive(live=True)


@health_router.get(
    "/v2/health/ready",
    responses={503: v2_error("The database or broker is down, or models are loading.")},
)
async def server_ready(
    *, session: SessionDep, celery: CeleryDep, server: ModelServerDep
) -> ServerReady:
    """Ready as /readyz is: the database and broker answer, and a model is loaded."""
    await health.readyz(session=session, celery=celery, server=server)
    return ServerReady(ready=True)


@health_router.get("/v2")
def server_metadata(request: Request) -> ServerMetadata:
    """The server's name, version and the protocol extensions it speaks."""
    return ServerMetadata(
        name=request.app.title, version=request.app.version, extensions=["binary_tensor_data"]
    )


@router.get(MODEL, responses=NO_MODEL, operation_id="v2_model_metadata")
async def model_metadata(*, request: Request, server: ModelServerDep, model: str) -> ModelMetadata:
    """The model's versions, platform, inputs (send one of them) and outputs."""
    return _metadata(server, await _served(server, request, model))


@router.get(VERSION, responses=NO_MODEL, operation_id="v2_model_version_metadata")
async def model_version_metadata(
    *, request: Request, server: ModelServerDep, model: str, version: str
) -> ModelMetadata:
    """A version's metadata."""
    return _metadata(server, await _served(server, request, model, version))


@router.get(f"{MODEL}/ready", responses=NO_MODEL, operation_id="v2_model_ready")
async def model_ready(*, request: Request, server: ModelServerDep, model: str) -> ModelReady:
    """200 once the model is loaded (this call loads it); 404 for no such model."""
    await _served(server, request, model)
    return ModelReady(name=model, ready=True)


@router.get(f"{VERSION}/ready", responses=NO_MODEL, operation_id="v2_model_version_ready")
async def model_version_ready(
    *, request: Request, server: ModelServerDep, model: str, version: str
) -> ModelReady:
    """200 once the version is loaded (this call loads it)."""
    await _served(server, request, model, version)
    return ModelReady(name=model, ready=True)


@infer_router.post(
    f"{MODEL}/infer",
    response_class=JSONResponse,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_EXTRA,
    operation_id="v2_infer",
)
async def infer(request: Request, model: str) -> Response:
    """Inference: one input (texts, image files, or image tensors), outputs `label` (BYTES)
    and `probabilities` (FP32, one row per input in the order of the model's classes)."""
    return await _infer(request, model)


@infer_router.post(
    f"{VERSION}/infer",
    response_class=JSONResponse,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_EXTRA,
    operation_id="v2_version_infer",
)
async def version_infer(request: Request, model: str, version: str) -> Response:
    """Inference by a given version of the model."""
    return await _infer(request, model, version)


async def _served(
    server: ModelServer, request: Request, model: str, version: str | None = None
) -> Served:
    """The loaded version answering `model` (or its `version`) for the request's key."""
    key = key_of(request)
    if version is None:
        return await server.resolve(model, IMAGE_TASK, key)
    served = await server.resolve(version, IMAGE_TASK, key)
    if version not in (served.version.id, served.version.job_id) or served.version.name != (
        server.name_of(model)
    ):
        raise UnknownModel(f"model {model!r} has no version {version!r}")
    return served


def _metadata(server: ModelServer, served: Served) -> ModelMetadata:
    name = served.version.name
    return kserve.model_metadata(name, server.versions_of(name), served.batcher.predictor)


async def _infer(request: Request, model: str, version: str | None = None) -> Response:
    server: ModelServer = request.app.state.model_server
    header_length = request.headers.get(kserve.HEADER_LENGTH, "")
    with server.arrivals.expect():
        body = await request.body()
        call = await off_the_loop_if_big(kserve.infer_call, header_length, body)
        in_binary = kserve.outputs_wanted(call)
        served = await _served(server, request, model, version)
        predictor = served.batcher.predictor
        examples = kserve.examples(call, predictor)
        answer = served.batcher.submit(examples, len(predictor.classes))
    ranked = await answers_of(answer, "inputs[0]")
    version_info = served.version
    answered = kserve.infer_answer(
        call.request, in_binary, (version_info.name, version_info.id, predictor.classes), ranked
    )
    return Response(answered.body, media_type=answered.media_type, headers=answered.headers)
