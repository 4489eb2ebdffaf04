"""The predictor cache: each model version loaded once, checked against its sha256."""

import threading
from collections import OrderedDict
from pathlib import Path

from app.tables import ModelVersion
from models.files import file_sha256, load_plain
from models.predictor import Predictor


class ModelFileCorrupt(RuntimeError):
    pass


class PredictorCache:
    def __init__(self, size: int):
        self.size = size
        self._predictors: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: ModelVersion) -> Predictor:
        with self._lock:
            if model.id in self._predictors:
                self._predictors.move_to_end(model.id)
                return self._predictors[model.id]
        predictor = self._load(model)
        with self._lock:
            self._predictors[model.id] = predictor
            while len(self._predictors) > self.size:
                self._predictors.popitem(last=False)
        return predictor

    @staticmethod
    def _load(model: ModelVersion) -> Predictor:
        path = Path(model.checkpoint_path)
        if file_sha256(path) != model.sha256:
            raise ModelFileCorrupt(f"model {model.id}: checkpoint does not match its sha256")
        return Predictor(load_plain(path))
