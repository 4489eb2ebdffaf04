"""The KServe V2 inference protocol (Open Inference Protocol) on the wire: what an infer
request asks, and the answer's body, in JSON or with the binary tensor data extension;
and the protocol's error body, `{"error": "..."}`, for every answer under /v2.

Binary tensor data: a body whose `Inference-Header-Content-Length` header says how long its
JSON part is; each tensor with `parameters.binary_data_size` has its elements after the
JSON, in order: BYTES as a 4-byte little-endian length and the bytes, numbers raw and
little-endian. tritonclient sends and asks for it by default.
"""

import base64
import binascii
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fastapi import HTTPException
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.schemas import MAX_EXAMPLES, InferRequest, InferTensor, ModelMetadata, TensorMetadata
from models.data import IMAGE_TASK
from models.predictor import Predictor, Ranked

V2_PREFIX = "/v2"
HEADER_LENGTH = "Inference-Header-Content-Length"
OUTPUTS = ("label", "probabilities")
NUMERIC: dict[str, np.dtype] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
LENGTH = struct.Struct("<I")  # the prefix of each BYTES element in binary data
# Where ONNX Runtime answers (app/serving.py's default for image networks), else PyTorch.
PLATFORMS = {"onnx": "onnxruntime_onnx", "torch": "pytorch"}

Examples = list[bytes] | list[str] | list[torch.Tensor]


@dataclass(frozen=True)
class InferCall:
    """An infer request: its JSON header, validated, and its input's binary data if sent."""

    request: InferRequest
    binary: bytes | None

    @property
    def tensor(self) -> InferTensor:
        return self.request.inputs[0]


def infer_call(header_length: str, body: bytes) -> InferCall:
    """The request a body makes, its JSON part `header_length` long ("": all of it);
    HTTPException 422 (400 for a header length that does not fit the body) naming what is
    wrong."""
    if not header_length:
        return InferCall(_validated(body), None)
    if not header_length.isdigit() or int(header_length) > len(body):
        raise HTTPException(
            400,
            f"{HEADER_LENGTH} must be the length of the body's JSON part, at most "
            f"{len(body)}, not {header_length!r}",
        )
    split = int(header_length)
    call = InferCall(_validated(body[:split]), body[split:])
    size = (call.tensor.parameters or {}).get("binary_data_size")
    if size is None and call.binary:
        raise HTTPException(
            422, "inputs[0]: binary data follows the JSON without a binary_data_size"
        )
    if size is not None and size != len(call.binary or b""):
        raise HTTPException(
            422,
            f"inputs[0].parameters.binary_data_size is {size}, but {len(call.binary or b'')} "
            "bytes follow the JSON",
        )
    return call


def _validated(header: bytes) -> InferRequest:
    try:
        return InferRequest.model_validate_json(header)
    except ValidationError as exc:
        problems = [{k: e[k] for k in ("loc", "msg", "type")} for e in exc.errors()]
        raise HTTPException(422, problems) from exc


def examples(call: InferCall, predictor: Predictor) -> Examples:
    """The examples the input tensor holds, as the predictor takes them: texts, image files,
    or one C,H,W tensor per image."""
    tensor = call.tensor
    if tensor.datatype != "BYTES":
        if predictor.task != IMAGE_TASK:
            raise _bad(f"a {predictor.task} model takes BYTES (texts), not {tensor.datatype}")
        return _image_tensors(tensor, call.binary, _image_shape(predictor))
    if len(tensor.shape) > 2 or tensor.shape[1:] not in ([], [1]):
        raise _bad(f"shape must be [N] or [N, 1] for BYTES, not {tensor.shape}")
    items = _bytes_elements(call.binary) if call.binary is not None else _flat(tensor.data)
    if call.binary is None and not all(isinstance(item, str) for item in items):
        raise _bad("BYTES data in JSON must be strings")
    _check_count(tensor.shape, len(items))
    if predictor.task == IMAGE_TASK:
        return [_image_file(item) for item in items]
    return [_text(item) for item in items]


def _bad(problem: str) -> HTTPException:
    return HTTPException(422, f"inputs[0]: {problem}")


def _check_count(shape: list[int], count: int) -> None:
    if any(size < 0 for size in shape) or math.prod(shape) != count:
        raise _bad(f"shape {shape} does not fit its {count} elements")
    if not 1 <= shape[0] <= MAX_EXAMPLES:
        raise _bad(f"takes 1 to {MAX_EXAMPLES} examples a request, not {shape[0]}")


def _flat(data: list | None) -> list:
    if data is None:
        raise _bad("no data: send `data`, or binary data with its binary_data_size")
    return [x for row in data for x in row] if data and isinstance(data[0], list) else data


def _bytes_elements(binary: bytes) -> list[bytes]:
    items, at = [], 0
    while at < len(binary):
        if at + LENGTH.size > len(binary):
            raise _bad("binary BYTES data ends inside an element's 4-byte length")
        (size,) = LENGTH.unpack_from(binary, at)
        at += LENGTH.size
        if at + size > len(binary):
            raise _bad("binary BYTES data ends inside an element")
        items.append(binary[at : at + size])
        at += size
    return items


def _image_file(item: str | bytes) -> bytes:
    """An image file: raw in binary data; base64 in JSON, whose strings must be text."""
    if isinstance(item, bytes):
        return item
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad("an image model takes image files: base64-encoded in JSON data") from exc


def _text(item: str | bytes) -> str:
    if isinstance(item, str):
        return item
    try:
        return item.decode()
    except UnicodeDecodeError as exc:
        raise _bad(f"a text is not UTF-8: {exc}") from exc


def _image_shape(predictor: Predictor) -> list[int]:
    image = predictor.image
    return [image.channels, image.height, image.width]


def _image_tensors(tensor: InferTensor, binary: bytes | None, chw: list[int]) -> Examples:
    if tensor.shape[1:] != chw:
        raise _bad(
            f"shape must be [N, {', '.join(map(str, chw))}] (N, C, H, W), not {tensor.shape}"
        )
    dtype = NUMERIC[tensor.datatype]
    if binary is not None:
        if len(binary) % dtype.itemsize:
            raise _bad(f"binary {tensor.datatype} data of {len(binary)} bytes")
        array = np.frombuffer(binary, dtype)
    else:
        array = _numbers(tensor, dtype)
    _check_count(tensor.shape, array.size)
    return list(torch.from_numpy(array.reshape(tensor.shape).copy()).unbind(0))


def _numbers(tensor: InferTensor, dtype: np.dtype) -> np.ndarray:
    try:
        values = np.asarray(_flat(tensor.data), dtype=np.float64).reshape(-1)
    except ValueError as exc:
        raise _bad(f"{tensor.datatype} data must be numbers") from exc
    if dtype == NUMERIC["UINT8"] and ((values % 1 != 0) | (values < 0) | (values > 255)).any():
        raise _bad("UINT8 data must be whole numbers from 0 to 255")
    return values.astype(dtype)


# ---- the answer ------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    body: bytes
    headers: dict[str, str]
    media_type: str


def outputs_wanted(call: InferCall) -> dict[str, bool]:
    """The outputs the request asks for (both by default), each with whether it goes as
    binary data; HTTPException 422 for an output no model has."""
    request = call.request
    binary_default = bool((request.parameters or {}).get("binary_data_output", False))
    wanted = request.outputs or []
    asked = {o.name: bool((o.parameters or {}).get("binary_data", binary_default)) for o in wanted}
    unknown = sorted(set(asked) - set(OUTPUTS))
    if unknown:
        raise HTTPException(
            422, f"outputs: no output {unknown[0]!r}; the outputs are {', '.join(OUTPUTS)}"
        )
    return asked or dict.fromkeys(OUTPUTS, binary_default)


def infer_answer(
    request: InferRequest,
    in_binary: dict[str, bool],
    served: tuple[str, str, list[str]],
    ranked: list[Ranked],
) -> Answer:
    """The answer's body: the outputs of `in_binary` (from outputs_wanted), each in JSON or
    as binary data; `id` only when the request sent one. `served`: the model's name, the
    version id and its classes."""
    model_name, version_id, classes = served
    header: dict[str, Any] = {"model_name": model_name, "model_version": version_id}
    if request.id is not None:
        header["id"] = request.id
    tensors = _outputs(classes, ranked)
    header["outputs"], chunks = [], []
    for name, binary in in_binary.items():
        datatype, shape, data = tensors[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            chunk = _binary(datatype, data)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = data
        header["outputs"].append(entry)
    encoded = json.dumps(header).encode()
    if not chunks:
        return Answer(encoded, {}, "application/json")
    headers = {HEADER_LENGTH: str(len(encoded))}
    return Answer(encoded + b"".join(chunks), headers, "application/octet-stream")


def _outputs(classes: list[str], ranked: list[Ranked]) -> dict[str, tuple[str, list[int], list]]:
    probabilities = [dict(answer) for answer in ranked]
    return {
        "label": ("BYTES", [len(ranked)], [answer[0][0] for answer in ranked]),
        "probabilities": (
            "FP32",
            [len(ranked), len(classes)],
            [p[label] for p in probabilities for label in classes],
        ),
    }


def _binary(datatype: str, data: Sequence) -> bytes:
    if datatype == "BYTES":
        encoded = [item.encode() for item in data]
        return b"".join(LENGTH.pack(len(item)) + item for item in encoded)
    return np.asarray(data, dtype=NUMERIC[datatype]).tobytes()


# ---- model metadata ----------------------------------------------------------------------


def model_metadata(name: str, versions: list[str], predictor: Predictor) -> ModelMetadata:
    """The inputs a model takes (send one of them) and the outputs it gives."""
    if predictor.task == IMAGE_TASK:
        chw = _image_shape(predictor)
        inputs = [
            TensorMetadata(name="image", datatype="BYTES", shape=[-1]),
            TensorMetadata(name="pixels", datatype="UINT8", shape=[-1, *chw]),
            TensorMetadata(name="input", datatype="FP32", shape=[-1, *chw]),
        ]
    else:
        inputs = [TensorMetadata(name="text", datatype="BYTES", shape=[-1])]
    return ModelMetadata(
        name=name,
        versions=versions,
        platform=PLATFORMS[predictor.runtime],
        inputs=inputs,
        outputs=[
            TensorMetadata(name="label", datatype="BYTES", shape=[-1]),
            TensorMetadata(
                name="probabilities", datatype="FP32", shape=[-1, len(predictor.classes)]
            ),
        ],
    )


# ---- the protocol's error body -----------------------------------------------------------


def is_v2(path: str) -> bool:
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def v2_error_body(body: bytes) -> bytes:
    """`{"detail": ...}` (the app's errors, docs/errors.md) as `{"error": "..."}`: a
    list of invalid fields as one sentence."""
    try:
        detail = json.loads(body).get("detail", body.decode())
    except (ValueError, AttributeError):
        detail = body.decode(errors="replace")
    if isinstance(detail, list):
        detail = "; ".join(_field_problem(problem) for problem in detail)
    return json.dumps({"error": str(detail)}).encode()


def _field_problem(problem: Any) -> str:
    if not isinstance(problem, dict):
        return str(problem)
    where = ".".join(str(part) for part in problem.get("loc", ()))
    return f"{where}: {problem.get('msg', '')}" if where else str(problem.get("msg", ""))


class V2ErrorBodies:
    """Every error answer under /v2 (the routes', and the 401 and 413 of the middlewares
    inside this one) in the protocol's shape: clients such as tritonclient read `error`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_v2(scope["path"]):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def reshaping_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = v2_error_body(b"".join(chunks))
            kept = [
                (name, value)
                for name, value in start["headers"]
                if name.lower() not in (b"content-length", b"content-type")
            ]
            length = (b"content-length", b"%d" % len(body))
            headers = [*kept, (b"content-type", b"application/json"), length]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, reshaping_send)
