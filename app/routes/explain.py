"""POST /explain: why a served model answered what it did, for each image or text.

It takes what /predict takes and resolves `model` the same way. The work (an integral of
`TRAINSERVE_EXPLAIN_STEPS` forwards and backwards per image, a forward per word of a text)
runs in this API process's explanation threads (`TRAINSERVE_EXPLAIN_THREADS`), never on the
event loop: the model is already loaded here, the answer is synchronous, and a request's
cost is capped by the settings; a worker would add a broker round trip and a second copy
of every model in use.
"""

import asyncio
import base64
import json
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import numpy as np
import torch
from fastapi import APIRouter, HTTPException, Request, Response

from app.config import Settings, get_settings
from app.deps import key_of
from app.routes.predict import (
    JSON,
    REQUEST_BODY,
    PredictRequest,
    off_the_loop_if_big,
    predict_request,
    resolve_for_task,
)
from app.schemas import Explanation, error
from app.serving import Served
from models.data import IMAGE_TASK, DatasetError, decode_image
from models.explain import (
    fitted_size,
    integrated_gradients,
    map_at_size,
    overlay_png,
    pixel_map,
    word_occlusion,
)
from models.predictor import Predictor
from models.text import tokenize

router = APIRouter(tags=["predict"])


def explain_pool(settings: Settings) -> ThreadPoolExecutor:
    """The threads explanations run in: app.main makes one per process."""
    return ThreadPoolExecutor(settings.explain_threads, thread_name_prefix="explain")


@router.post(
    "/explain",
    openapi_extra={"requestBody": REQUEST_BODY},
    response_model=Explanation | list[Explanation],
    responses={
        400: error("The multipart body cannot be parsed."),
        404: error("No such model or alias, or no model yet for the task."),
        415: error("Neither JSON nor multipart."),
        422: error("Bad fields, too many inputs or words, or a file that is not an image."),
    },
)
async def explain(request: Request) -> Response:
    """Explain the top answer for images (integrated gradients from a black image: one value
    per input pixel, and a PNG overlay) or texts (each word's occlusion score)."""
    settings = get_settings()
    body = await request.body()
    asked = await off_the_loop_if_big(
        predict_request, request.headers.get("content-type", ""), body
    )
    _refuse_too_much(asked, settings)
    served = await resolve_for_task(request.app.state.model_server, asked, key_of(request))
    loop = asyncio.get_running_loop()
    try:
        answers = await loop.run_in_executor(
            request.app.state.explain_pool, explain_all, served, asked, settings
        )
    except DatasetError as exc:
        raise HTTPException(422, f"{asked.field}: {exc}") from exc
    return Response(json.dumps(answers if asked.many else answers[0]), media_type=JSON)


def _refuse_too_much(asked: PredictRequest, settings: Settings) -> None:
    if len(asked.examples) > settings.explain_max_inputs:
        raise HTTPException(
            422,
            f"/explain takes at most {settings.explain_max_inputs} inputs a request "
            f"(TRAINSERVE_EXPLAIN_MAX_INPUTS), not {len(asked.examples)}",
        )
    if asked.task == IMAGE_TASK:
        return
    for index, text in enumerate(cast(list[str], asked.examples)):
        if (words := len(tokenize(text))) > settings.explain_max_words:
            raise HTTPException(
                422,
                f"text {index} has {words} words; /explain scores at most "
                f"{settings.explain_max_words} (TRAINSERVE_EXPLAIN_MAX_WORDS)",
            )


def explain_all(served: Served, asked: PredictRequest, settings: Settings) -> list[dict]:
    """Each example's Explanation (app/schemas.py) as a plain dict, in an explanation thread."""
    predictor = served.batcher.predictor
    version = served.version
    about = {"model_id": version.id, "job_id": version.job_id, "model_name": version.name}
    if asked.task == IMAGE_TASK:
        return [
            about | explain_image(predictor, cast(bytes, image), settings)
            for image in asked.examples
        ]
    return [about | explain_text(predictor, cast(str, text)) for text in asked.examples]


def explain_image(predictor: Predictor, data: bytes, settings: Settings) -> dict:
    image = predictor.image.decode(data, settings.max_predict_image_pixels)
    inputs = predictor.image.normalize(image.unsqueeze(0))[0]
    baseline = predictor.image.normalize(torch.zeros_like(image).unsqueeze(0))[0]
    with torch.inference_mode():
        logits = predictor.network(torch.stack([inputs, baseline]))
    target = int(logits[0].argmax())
    steps = settings.explain_steps
    attribution = integrated_gradients(predictor.network, inputs, baseline, target, steps)
    shown = _as_sent(data, image.shape[0], settings)
    pixels = map_at_size(pixel_map(attribution), (shown.shape[1], shown.shape[2]))
    change = float(logits[0, target] - logits[1, target])
    return {
        "label": predictor.classes[target],
        "probability": round(float(logits[0].softmax(dim=0)[target]), 6),
        "method": "integrated_gradients",
        "attribution": [[round(value, 6) for value in row] for row in pixels.tolist()],
        "overlay_png": base64.b64encode(overlay_png(shown, pixels)).decode(),
        "steps": steps,
        "completeness_gap": round(float(attribution.sum()) - change, 6),
    }


def _as_sent(data: bytes, channels: int, settings: Settings) -> torch.Tensor:
    """The image as it was sent (uint8 C,H,W, in the network's channels), scaled down to fit
    TRAINSERVE_EXPLAIN_MAX_MAP_SIDE: what its map and overlay are drawn at."""
    mode = "L" if channels == 1 else "RGB"
    full = decode_image(data, mode=mode, max_pixels=settings.max_predict_image_pixels)
    size = fitted_size(full.shape[0], full.shape[1], settings.explain_max_map_side)
    if size != full.shape[:2]:
        full = decode_image(
            data, resize=size, mode=mode, max_pixels=settings.max_predict_image_pixels
        )
    pixels = torch.from_numpy(np.ascontiguousarray(full))
    return pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)


def explain_text(predictor: Predictor, text: str) -> dict:
    target, probability, tokens = word_occlusion(predictor.probabilities, text)
    return {
        "label": predictor.classes[target],
        "probability": round(probability, 6),
        "method": "word_occlusion",
        "tokens": tokens,
    }
