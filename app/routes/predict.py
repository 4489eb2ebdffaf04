from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app import repository
from app.deps import PredictorsDep, SessionDep
from app.schemas import Prediction, TextPredictRequest, error
from app.serving import PredictorCache
from app.tables import ModelVersion
from models.data import IMAGE_TASK, TEXT_TASK, DatasetError

router = APIRouter(tags=["predict"])

REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": TextPredictRequest.model_json_schema(),
            "examples": {
                "one text": {"value": {"text": "a gripping, beautifully acted film"}},
                "several texts": {"value": {"texts": ["dull and overlong", "a delight"]}},
            },
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "An image."},
                    "model": {"type": "string", "description": "A model id or job id."},
                    "top_k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
                },
            },
            "examples": {"an image": {"value": {"file": "(a PNG or JPEG)", "top_k": 3}}},
        },
    },
}


@router.post(
    "/predict",
    openapi_extra={"requestBody": REQUEST_BODY},
    responses={
        400: error("The multipart body cannot be parsed."),
        404: error("No such model, or no model yet for the task."),
        415: error("Neither JSON nor multipart."),
        422: error("Bad fields, or a file that is not an image."),
    },
)
async def predict(
    request: Request, session: SessionDep, predictors: PredictorsDep
) -> Prediction | list[Prediction]:
    """Classify an image (multipart field 'file') or text (JSON 'text' or 'texts')."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        image, model_ref, top_k = await _image_request(request)
        return await run_in_threadpool(_predict_image, session, predictors, image, model_ref, top_k)
    if content_type.startswith("application/json"):
        body = await _text_request(request)
        return await run_in_threadpool(_predict_texts, session, predictors, body)
    raise HTTPException(
        415,
        "send an image as multipart/form-data (field 'file') or "
        "text as application/json ({'text': ...})",
    )


async def _image_request(request: Request) -> tuple[bytes, str | None, int]:
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPException(422, "multipart field 'file' with an image is required")
    top_k = str(form.get("top_k") or "3")
    if not top_k.isdigit() or not 1 <= int(top_k) <= 100:
        raise HTTPException(422, "top_k must be a whole number from 1 to 100")
    return await upload.read(), (str(form["model"]) if form.get("model") else None), int(top_k)


async def _text_request(request: Request) -> TextPredictRequest:
    try:
        return TextPredictRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [{k: e[k] for k in ("loc", "msg", "type")} for e in exc.errors()]
        raise HTTPException(422, errors) from exc


def _predict_image(
    session: Session, predictors: PredictorCache, image: bytes, model_ref: str | None, top_k: int
) -> Prediction:
    model = _resolve_model(session, model_ref, IMAGE_TASK)
    try:
        [ranked] = predictors.get(model).predict_images([image], top_k)
    except DatasetError as exc:
        raise HTTPException(422, f"file: {exc}") from exc
    return _prediction(model, ranked)


def _predict_texts(
    session: Session, predictors: PredictorCache, body: TextPredictRequest
) -> Prediction | list[Prediction]:
    model = _resolve_model(session, body.model, TEXT_TASK)
    texts = body.texts if body.texts is not None else [body.text]
    results = [
        _prediction(model, ranked)
        for ranked in predictors.get(model).predict_texts(texts, body.top_k)
    ]
    return results if body.texts is not None else results[0]


def _resolve_model(session: Session, model_ref: str | None, task: str) -> ModelVersion:
    if model_ref is None:
        model = repository.latest_model(session, task)
        if model is None:
            raise HTTPException(
                404, f"no trained {task} model yet: POST /jobs and wait for a job to succeed"
            )
        return model
    model = repository.find_model(session, model_ref)
    if model is None:
        raise HTTPException(
            404, f"model {model_ref!r} is neither a model id nor the id of a succeeded job"
        )
    if model.task != task:
        raise HTTPException(
            422, f"model {model_ref!r} is a {model.task} model; this request is {task}"
        )
    return model


def _prediction(model: ModelVersion, ranked: list[tuple[str, float]]) -> Prediction:
    return Prediction(
        label=ranked[0][0],
        top_k=[{"label": label, "probability": p} for label, p in ranked],
        model_id=model.id,
        job_id=model.job_id,
        model_name=model.name,
    )
