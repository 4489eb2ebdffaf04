"""A TorchServe handler for a trainserve checkpoint, used by bench/serving.py only.

It runs the same decode and forward code as trainserve (models/predictor.py, found
through PYTHONPATH, with trainserve's serving runtime) on the checkpoint the registry's
weights download gives, so the two servers differ only in how they take requests,
batch them and answer.
"""

import json
from pathlib import Path

import torch
from ts.torch_handler.base_handler import BaseHandler

from app.config import get_settings
from models.files import load_plain
from models.predictor import Predictor

TOP_K = 3


class TrainserveCheckpointHandler(BaseHandler):
    def initialize(self, context) -> None:
        torch.set_num_threads(1)  # two workers on two cores
        model_dir = Path(context.system_properties["model_dir"])
        # The runtime trainserve serves with (TRAINSERVE_SERVING_RUNTIME, default onnx), so
        # the two servers run the same forward.
        runtime = get_settings().serving_runtime
        self.predictor = Predictor(load_plain(model_dir / "checkpoint.pt"), runtime)
        self.initialized = True

    def handle(self, data: list[dict], context) -> list[str]:
        examples = [[self._example(row)] for row in data]
        answers = self.predictor.predict_requests(examples, [TOP_K] * len(examples))
        return [self._encode(answer) for answer in answers]

    @staticmethod
    def _example(row: dict) -> bytes | str:
        if row.get("file") is not None:  # multipart, as trainserve gets it
            return bytes(row["file"])
        body = row.get("body") or row.get("data")
        if isinstance(body, dict):  # JSON, decoded by TorchServe
            return body["text"]
        return bytes(body)  # a raw image

    @staticmethod
    def _encode(answer) -> str:
        if isinstance(answer, Exception):
            return json.dumps({"error": str(answer)})
        [ranked] = answer
        return json.dumps(
            {"label": ranked[0][0], "top_k": [{"label": k, "probability": p} for k, p in ranked]}
        )
