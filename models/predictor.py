"""Serving a checkpoint: decode, predict, encode. The network is loaded once."""

import torch

from models.checkpoint import network_from_checkpoint
from models.data import IMAGE_TASK, ImagePreprocessing
from models.text import Vocabulary, pad_batch


class Predictor:
    def __init__(self, checkpoint: dict):
        self.task: str = checkpoint["task"]
        self.arch: str = checkpoint["arch"]
        self.classes: list[str] = checkpoint["classes"]
        self.network = network_from_checkpoint(checkpoint)
        preprocessing = checkpoint["preprocessing"]
        if self.task == IMAGE_TASK:
            self.image = ImagePreprocessing(**preprocessing["image"])
        else:
            self.vocabulary = Vocabulary(**preprocessing["vocabulary"])

    def predict_images(self, images: list[bytes], top_k: int) -> list[list[tuple[str, float]]]:
        """Raises models.data.DatasetError for bytes that are not an image."""
        batch = torch.stack([self.image.decode(data) for data in images])
        return self._top_k(self.image.normalize(batch), top_k)

    def predict_texts(self, texts: list[str], top_k: int) -> list[list[tuple[str, float]]]:
        encoded = [self.vocabulary.encode(text) for text in texts]
        batch = pad_batch(encoded, self.network.min_length)
        return self._top_k(batch, top_k)

    def _top_k(self, inputs: torch.Tensor, top_k: int) -> list[list[tuple[str, float]]]:
        with torch.inference_mode():
            probabilities = self.network(inputs).softmax(dim=1)
        values, indices = probabilities.topk(min(top_k, len(self.classes)), dim=1)
        return [
            [(self.classes[i], round(p, 6)) for p, i in zip(row_p, row_i, strict=True)]
            for row_p, row_i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
