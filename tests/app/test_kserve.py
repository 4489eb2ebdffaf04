"""The KServe V2 wire format of app/kserve.py: what a body asks, and what the answer says."""

import json
import struct

import pytest
from fastapi import HTTPException

from app.kserve import infer_answer, infer_call, outputs_wanted, v2_error_body


def binary_body(texts: list[bytes], **header) -> tuple[str, bytes]:
    data = b"".join(struct.pack("<I", len(t)) + t for t in texts)
    tensor = {"name": "text", "shape": [len(texts)], "datatype": "BYTES"}
    tensor["parameters"] = {"binary_data_size": len(data)}
    encoded = json.dumps({"inputs": [tensor], **header}).encode()
    return str(len(encoded)), encoded + data


def refused(header_length: str, body: bytes) -> HTTPException:
    with pytest.raises(HTTPException) as caught:
        infer_call(header_length, body)
    return caught.value


def test_binary_data_is_split_from_the_json_by_the_header_length():
    length, body = binary_body([b"dull", b"a delight"])
    call = infer_call(length, body)
    assert call.binary == body[int(length) :] and call.tensor.datatype == "BYTES"
    assert refused(str(len(body) + 1), body).status_code == 400
    assert refused("x", body).status_code == 400
    cut = refused(length, body[:-1])
    assert cut.status_code == 422 and "binary_data_size" in str(cut.detail)
    assert refused("", b"{not json").status_code == 422


def test_outputs_asked_for_and_their_encoding():
    length, body = binary_body([b"fine"], outputs=[{"name": "label"}])
    call = infer_call(length, body)
    assert outputs_wanted(call) == {"label": False}
    both_binary = infer_call(*binary_body([b"x"], parameters={"binary_data_output": True}))
    assert outputs_wanted(both_binary) == {"label": True, "probabilities": True}
    unknown = infer_call(*binary_body([b"x"], outputs=[{"name": "logits"}]))
    with pytest.raises(HTTPException) as caught:
        outputs_wanted(unknown)
    assert "logits" in caught.value.detail and "label, probabilities" in caught.value.detail

    ranked = [[("positive", 0.75), ("negative", 0.25)]]
    served = ("mr", "v1", ["negative", "positive"])
    answer = infer_answer(
        both_binary.request, {"label": True, "probabilities": False}, served, ranked
    )
    split = int(answer.headers["Inference-Header-Content-Length"])
    header = json.loads(answer.body[:split])
    assert "id" not in header  # the request sent none
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 4 + len("positive")}
    assert answer.body[split:] == struct.pack("<I", 8) + b"positive"
    assert header["outputs"][1]["data"] == [0.25, 0.75]  # in the classes' order
    with_id = infer_call("", json.dumps({"id": "7", **json.loads(body[: int(length)])}).encode())
    plain = infer_answer(with_id.request, {"label": False}, served, ranked)
    assert plain.media_type == "application/json" and json.loads(plain.body)["id"] == "7"


def test_the_apps_errors_become_the_protocols():
    assert json.loads(v2_error_body(b'{"detail": "no such model"}')) == {"error": "no such model"}
    fields = json.dumps({"detail": [{"loc": ["body", "inputs"], "msg": "Field required"}]})
    assert json.loads(v2_error_body(fields.encode())) == {"error": "body.inputs: Field required"}
    assert json.loads(v2_error_body(b"Internal Server Error")) == {"error": "Internal Server Error"}
