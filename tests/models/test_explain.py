"""Integrated gradients against networks whose integral is known in closed form; word
occlusion and the overlay by hand."""

import io

import pytest
import torch
from PIL import Image
from torch import nn

from models.explain import (
    fitted_size,
    integrated_gradients,
    map_at_size,
    overlay_png,
    word_occlusion,
)


class Linear(nn.Module):
    """logit c = sum(w_c * x): the gradient is w_c everywhere, so IG = w_c * (x - baseline)."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.weights = nn.Parameter(weights)  # classes, *shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.unsqueeze(1) * self.weights).flatten(2).sum(dim=2)


class Squares(nn.Module):
    """logit 0 = sum(x^2): IG_i = (x_i - b_i) * integral of 2(b_i + a(x_i - b_i)) da
    = x_i^2 - b_i^2, and the midpoint rule integrates the straight line exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x**2).flatten(1).sum(dim=1, keepdim=True)


def test_integrated_gradients_of_a_linear_network_are_weights_times_the_difference():
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(3, 1, 4, 4, generator=generator)
    inputs, baseline = torch.randn(1, 4, 4, generator=generator), torch.full((1, 4, 4), -0.5)
    attribution = integrated_gradients(Linear(weights), inputs, baseline, target=2, steps=3)
    torch.testing.assert_close(attribution, weights[2] * (inputs - baseline))


def test_integrated_gradients_of_squares_are_the_difference_of_squares():
    inputs = torch.tensor([[[1.0, -2.0], [0.5, 3.0]]])
    baseline = torch.tensor([[[0.0, 1.0], [0.5, -1.0]]])
    attribution = integrated_gradients(Squares(), inputs, baseline, target=0, steps=4)
    torch.testing.assert_close(attribution, inputs**2 - baseline**2)
    # completeness: the attributions add up to the logit's change along the path
    assert float(attribution.sum()) == pytest.approx(float((inputs**2).sum() - (baseline**2).sum()))


def test_integrated_gradients_leave_the_parameters_gradients_alone():
    network = Linear(torch.ones(2, 1, 2, 2))
    integrated_gradients(network, torch.ones(1, 2, 2), torch.zeros(1, 2, 2), 0, steps=2)
    assert network.weights.grad is None


def test_word_occlusion_scores_the_fall_of_the_top_class_without_each_word():
    """A stand-in 'network' of two classes whose positive probability is 0.5 plus 0.1 per
    'good' and less 0.2 per 'dull' in the text."""

    def probabilities(texts: list[str]) -> torch.Tensor:
        positive = torch.tensor(
            [0.5 + 0.1 * _count(t, "good") - 0.2 * _count(t, "dull") for t in texts]
        )
        return torch.stack([1 - positive, positive], dim=1)

    target, probability, tokens = word_occlusion(probabilities, "Good good good film, dull")
    assert target == 1 and probability == pytest.approx(0.6)
    assert [t["token"] for t in tokens] == ["good", "good", "good", "film", ",", "dull"]
    assert [t["score"] for t in tokens] == pytest.approx([0.1, 0.1, 0.1, 0.0, 0.0, -0.2])


def _count(text: str, word: str) -> int:
    return text.lower().replace(",", " ").split().count(word)


def test_the_overlay_is_an_image_of_the_input_size_red_where_it_speaks_for_the_class():
    image = torch.full((1, 3, 5), 100, dtype=torch.uint8)
    attribution = torch.zeros(3, 5)
    attribution[1, 2], attribution[0, 0] = 1.0, -1.0
    picture = Image.open(io.BytesIO(overlay_png(image, attribution)))
    assert picture.size == (5, 3)
    red, _, blue = picture.getpixel((2, 1))
    assert red > blue
    red, _, blue = picture.getpixel((0, 0))
    assert blue > red


def test_a_map_drawn_at_another_size_keeps_its_sum_and_where_it_points():
    pixels = torch.zeros(4, 4)
    pixels[0, 3] = 8.0  # the top right corner
    larger = map_at_size(pixels, (8, 12))
    assert larger.shape == (8, 12)
    assert torch.isclose(larger.sum(), torch.tensor(8.0))
    row, column = divmod(int(larger.argmax()), 12)
    assert row < 2 and column >= 9  # still the top right corner


def test_a_size_is_fitted_within_the_largest_side_keeping_its_shape():
    assert fitted_size(3000, 4000, 512) == (384, 512)
    assert fitted_size(28, 28, 512) == (28, 28)  # never made larger
    assert fitted_size(1, 10_000, 512) == (1, 512)
