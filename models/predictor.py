"""Serving a checkpoint: decode, predict, encode. The network is loaded once.

Requests are served in batches: `predict_requests` takes the examples of several
requests, runs one forward where that gives each example the answer it would get
alone, and answers each request on its own (a bad image fails only its request).
"""

import logging
from collections.abc import Sequence
from itertools import groupby
from typing import cast

import torch

from models.checkpoint import network_from_checkpoint
from models.data import IMAGE_TASK, MAX_IMAGE_PIXELS, DatasetError, ImagePreprocessing
from models.export import ExportError, OnnxNetwork, example_input
from models.text import pad_batch, shortest_input, tokenizer_from_state

log = logging.getLogger("trainserve.predictor")

Ranked = list[tuple[str, float]]
# An image's uint8 C,H,W (or float C,H,W, normalised: the network's own input), or a
# text's token ids
Encoded = torch.Tensor | list[int]
Example = bytes | str | torch.Tensor  # an image file, a text, or an image's C,H,W tensor


class Predictor:
    """runtime "onnx": an image network answers through ONNX Runtime where it exports (2 to
    5 times PyTorch's speed on a CPU for the small convolutional networks), else through
    PyTorch; text networks always through PyTorch (their inputs vary in length)."""

    def __init__(
        self, checkpoint: dict, runtime: str = "torch", max_pixels: int = MAX_IMAGE_PIXELS
    ):
        self.task: str = checkpoint["task"]
        self.max_pixels = max_pixels  # of one image, judged from its header
        self.arch: str = checkpoint["arch"]
        self.classes: list[str] = checkpoint["classes"]
        self.network = network_from_checkpoint(checkpoint)
        preprocessing = checkpoint["preprocessing"]
        if self.task == IMAGE_TASK:
            self.image = ImagePreprocessing(**preprocessing["image"])
        else:
            self.vocabulary = tokenizer_from_state(preprocessing)
        # Networks whose answer ignores padding (a declared class attribute) batch texts of
        # any length together; the others only batch texts of the same length.
        self._padding_invariant = getattr(self.network, "padding_invariant", False)
        self._min_length = shortest_input(self.network)
        self._logits: OnnxNetwork | torch.nn.Module = self.network
        if runtime == "onnx" and self.task == IMAGE_TASK:
            self._logits = self._onnx_network(checkpoint)

    @property
    def runtime(self) -> str:
        return "onnx" if isinstance(self._logits, OnnxNetwork) else "torch"

    def _onnx_network(self, checkpoint: dict) -> OnnxNetwork | torch.nn.Module:
        example = example_input(checkpoint, self.network)
        try:
            return OnnxNetwork.of(self.network, example, torch.get_num_threads())
        except ExportError as exc:
            log.warning("%s; served by PyTorch", exc)
            return self.network

    def predict_images(self, images: list[bytes], top_k: int) -> list[Ranked]:
        """Raises models.data.DatasetError for bytes that are not an image."""
        return self._predict_one(images, top_k)

    def predict_texts(self, texts: list[str], top_k: int) -> list[Ranked]:
        return self._predict_one(texts, top_k)

    def _predict_one(self, examples: Sequence[Example], top_k: int) -> list[Ranked]:
        [answer] = self.predict_requests([examples], [top_k])
        if isinstance(answer, DatasetError):
            raise answer
        return answer

    def predict_requests(
        self,
        requests: Sequence[Sequence[Example]],
        top_ks: list[int],
        firsts: Sequence[int] | None = None,
    ) -> list[list[Ranked] | DatasetError]:
        """Each request's ranked answers, or the DatasetError that rejects the request.
        `firsts`: where each request's examples start in the request they are a slice of
        (app/batching.py), so that an error names the item as the client numbers it."""
        encoded: list[list[Encoded] | DatasetError] = []
        for examples, first in zip(requests, firsts or [0] * len(requests), strict=True):
            try:
                encoded.append(self._encode_all(examples, first))
            except DatasetError as exc:
                encoded.append(exc)
        valid = [
            x for examples in encoded if not isinstance(examples, DatasetError) for x in examples
        ]
        ranked = iter(self._ranked(self._probabilities(valid), max(top_ks)))
        return [
            examples
            if isinstance(examples, DatasetError)
            else [next(ranked)[:top_k] for _ in examples]
            for examples, top_k in zip(encoded, top_ks, strict=True)
        ]

    def probabilities(self, examples: Sequence[torch.Tensor] | Sequence[str]) -> torch.Tensor:
        """Class probabilities, one row per example, of decoded images (uint8 C,H,W in this
        network's size: a stored dataset's) or of texts."""
        if self.task == IMAGE_TASK:
            return self._probabilities(list(cast(Sequence[torch.Tensor], examples)))
        return self._probabilities([self.vocabulary.encode(cast(str, text)) for text in examples])

    def _encode_all(self, examples: Sequence[Example], first: int = 0) -> list[Encoded]:
        if len(examples) == 1 and first == 0:
            return [self._encode(examples[0])]
        encoded = []
        for index, example in enumerate(examples, start=first):
            try:
                encoded.append(self._encode(example))
            except DatasetError as exc:
                raise DatasetError(f"item {index}: {exc}") from exc
        return encoded

    def _encode(self, example: Example) -> Encoded:
        # A predictor serves one task: its examples are all images or all texts.
        if isinstance(example, torch.Tensor):  # pixels or input, shaped by the caller
            return example
        if self.task == IMAGE_TASK:
            return self.image.decode(cast(bytes, example), self.max_pixels)
        return self.vocabulary.encode(cast(str, example))

    def _probabilities(self, examples: list[Encoded]) -> torch.Tensor:
        """One row of class probabilities per example, in order."""
        if not examples:
            return torch.empty(0, len(self.classes))
        if self.task == IMAGE_TASK:
            return self._forward(self._image_inputs(cast(list[torch.Tensor], examples)))
        token_ids = cast(list[list[int]], examples)
        if self._padding_invariant:
            return self._forward(pad_batch(token_ids, self._min_length))
        rows = torch.empty(len(token_ids), len(self.classes))
        by_length = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
        for _, group in groupby(by_length, key=lambda i: len(token_ids[i])):
            indices = list(group)
            padded = pad_batch([token_ids[i] for i in indices], self._min_length)
            rows[indices] = self._forward(padded)
        return rows

    def _image_inputs(self, images: list[torch.Tensor]) -> torch.Tensor:
        """The network's input: uint8 images normalised (all at once, unless float inputs,
        already normalised, are among them)."""
        if all(image.dtype == torch.uint8 for image in images):
            return self.image.normalize(torch.stack(images))
        return torch.cat(
            [
                self.image.normalize(image[None]) if image.dtype == torch.uint8 else image[None]
                for image in images
            ]
        )

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._logits(inputs).softmax(dim=1)

    def _ranked(self, probabilities: torch.Tensor, top_k: int) -> list[Ranked]:
        values, indices = probabilities.topk(min(top_k, len(self.classes)), dim=1)
        return [
            [(self.classes[i], round(p, 6)) for p, i in zip(row_p, row_i, strict=True)]
            for row_p, row_i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
