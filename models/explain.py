"""Why a network answered what it did: integrated gradients for images, word occlusion for texts.

Plain torch (Captum would bring matplotlib and its own plotting stack for two short methods):
integrated gradients (Sundararajan et al. 2017) with the midpoint rule, tested against the
closed form of networks whose integral is known (tests/models/test_explain.py).
"""

import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from models.text import tokenize


def integrated_gradients(
    network: nn.Module, inputs: torch.Tensor, baseline: torch.Tensor, target: int, steps: int
) -> torch.Tensor:
    """Attribution of the target logit to each input value, the shape of `inputs` (one
    example, no batch axis): (inputs - baseline) times the mean gradient at `steps` points
    on the straight path from the baseline (midpoints, so a path whose gradient changes
    linearly is integrated exactly). The attributions add up to about f(inputs) -
    f(baseline). Gradients are taken of the inputs only (torch.autograd.grad), so the
    network's parameters, which other threads may be using, are left untouched."""
    alphas = (torch.arange(steps, dtype=inputs.dtype) + 0.5) / steps
    alphas = alphas.view(-1, *([1] * inputs.dim()))
    path = (baseline + alphas * (inputs - baseline)).requires_grad_(True)
    with torch.enable_grad():
        logits = network(path)[:, target]
        (gradients,) = torch.autograd.grad(logits.sum(), path)
    return (inputs - baseline) * gradients.mean(dim=0)


def word_occlusion(
    probabilities: Callable[[list[str]], torch.Tensor], text: str
) -> tuple[int, float, list[dict]]:
    """The top class of the text, its probability, and each word's score: how much that
    probability falls when the word is left out (negative: the text reads more like the
    class without it). One forward of the text and of each text less one word, batched."""
    words = tokenize(text)
    variants = [text, *(" ".join(words[:i] + words[i + 1 :]) for i in range(len(words)))]
    rows = probabilities(variants)
    target = int(rows[0].argmax())
    falls = rows[0, target] - rows[1:, target]
    scores = [
        {"token": word, "score": round(float(fall), 6)}
        for word, fall in zip(words, falls, strict=True)
    ]
    return target, float(rows[0, target]), scores


def overlay_png(image: torch.Tensor, attribution: torch.Tensor) -> bytes:
    """A PNG of the image (uint8 C,H,W) in grey with the attribution (H,W) over it: red where
    it speaks for the class, blue against, as strong as its share of the largest value."""
    grey = image.float().mean(dim=0) / 255
    scale = attribution.abs().max().clamp_min(1e-12)
    strength = (attribution / scale).clamp(-1, 1)
    rgb = grey.unsqueeze(-1).repeat(1, 1, 3) * 0.6
    rgb[..., 0] += strength.clamp(min=0) * 0.4
    rgb[..., 2] += (-strength).clamp(min=0) * 0.4
    pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def pixel_map(attribution: torch.Tensor) -> torch.Tensor:
    """A (C,H,W) attribution as one value per pixel: the sum over its channels."""
    return attribution.sum(dim=0)


def map_at_size(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An (H,W) map of the network's input drawn at another (height, width), bilinearly, its
    values spread over the pixels each one covers, so that their sum stays the same."""
    height, width = pixels.shape
    scaled = torch.nn.functional.interpolate(
        pixels[None, None].float(), size=size, mode="bilinear", align_corners=False
    )[0, 0]
    return scaled * (height * width) / (size[0] * size[1])


def fitted_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) scaled down, keeping the aspect ratio, to at most max_side a side."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))
