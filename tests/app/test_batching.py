"""Dynamic batching against real (untrained) networks: same answers, bounded sizes, no waiting."""

import asyncio
import time

import numpy as np
import pytest
import torch

from app.batching import Arrivals, Batcher
from app.metrics import Metrics
from models.architectures import build_network
from models.checkpoint import make_checkpoint
from models.data import IMAGE_TASK, TEXT_TASK, DatasetError
from models.export import ExportError, OnnxNetwork
from models.predictor import Predictor
from models.text import Vocabulary
from tests.conftest import png_bytes

WORDS = ["a", "truly", "great", "film", "dull", "awful", "mess", "delight", "boring", "moving"]


def image_predictor(runtime: str = "torch") -> Predictor:
    torch.manual_seed(0)
    args = {"num_classes": 10, "channels": 3, "height": 32, "width": 32}
    image = {"channels": 3, "height": 32, "width": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    return Predictor(
        make_checkpoint(
            task=IMAGE_TASK,
            arch="tutorial_cnn",
            model_args=args,
            classes=[str(i) for i in range(10)],
            preprocessing={"image": image},
            network=build_network("tutorial_cnn", args),
            epoch=1,
            metrics={},
        ),
        runtime,
    )


def text_predictor(arch: str) -> Predictor:
    torch.manual_seed(0)
    vocabulary = Vocabulary.build([" ".join(WORDS)], ngrams=2)
    args = {"num_classes": 2, "vocab_size": len(vocabulary)}
    return Predictor(
        make_checkpoint(
            task=TEXT_TASK,
            arch=arch,
            model_args=args,
            classes=["negative", "positive"],
            preprocessing={"vocabulary": vocabulary.to_state()},
            network=build_network(arch, args),
            epoch=1,
            metrics={},
        )
    )


def images(count: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    return [png_bytes(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(count)]


def texts(count: int) -> list[str]:
    rng = np.random.default_rng(2)
    return [" ".join(rng.choice(WORDS, rng.integers(1, 12))) for _ in range(count)]


def new_batcher(predictor: Predictor, max_size: int, budget_s: float):
    """A batcher labelled "m", with the metrics and arrival counter it reports to."""
    metrics, arrivals = Metrics(), Arrivals()
    batcher = Batcher(
        predictor,
        max_size=max_size,
        budget_s=budget_s,
        arrivals=arrivals,
        metrics=metrics.batch,
        label="m",
    )
    return batcher, metrics, arrivals


async def submit_concurrently(batcher: Batcher, requests: list[list], arrivals: Arrivals):
    """Like the route: each request counts as arriving until it has joined the queue."""

    async def one(examples):
        with arrivals.expect():
            await asyncio.sleep(0)  # the loop serves the other arrivals meanwhile
            answer = batcher.submit(examples, 3)
        return await answer

    return await asyncio.gather(*(one(examples) for examples in requests), return_exceptions=True)


def batch_sizes(metrics: Metrics) -> tuple[float, float]:
    registry = metrics.registry
    return (
        registry.get_sample_value("trainserve_batch_size_count", {"model": "m"}),
        registry.get_sample_value("trainserve_batch_size_sum", {"model": "m"}),
    )


@pytest.mark.parametrize(
    ("predictor", "examples"),
    [
        (image_predictor(), images(40)),
        (image_predictor("onnx"), images(40)),
        (text_predictor("bag_of_embeddings"), texts(40)),
        (text_predictor("text_cnn"), texts(40)),  # padding changes its answers: same-length batches
    ],
    ids=["tutorial_cnn", "tutorial_cnn_onnx", "bag_of_embeddings", "text_cnn"],
)
def test_batched_answers_are_the_single_request_answers(predictor, examples):
    batcher, metrics, arrivals = new_batcher(predictor, max_size=8, budget_s=0.05)
    requests = [[example] for example in examples[:30]] + [examples[30:35], examples[35:]]
    answers = asyncio.run(submit_concurrently(batcher, requests, arrivals))
    alone = [predictor.predict_requests([request], [3])[0] for request in requests]
    for batched, single in zip(answers, alone, strict=True):
        assert [[label for label, _ in ranked] for ranked in batched] == [
            [label for label, _ in ranked] for ranked in single
        ]
        for ranked_b, ranked_s in zip(batched, single, strict=True):
            assert np.allclose([p for _, p in ranked_b], [p for _, p in ranked_s], atol=1e-5)
    batches, examples_run = batch_sizes(metrics)
    assert examples_run == 40 and batches <= 40 / 4  # batched, never above max_size (8)
    assert (
        metrics.registry.get_sample_value(
            "trainserve_batch_size_bucket", {"model": "m", "le": "8.0"}
        )
        == batches
    )


def test_onnx_runtime_answers_as_pytorch_does():
    torch_predictor, onnx_predictor = image_predictor(), image_predictor("onnx")
    assert (torch_predictor.runtime, onnx_predictor.runtime) == ("torch", "onnx")
    examples = images(16)
    expected = torch_predictor.predict_images(examples, 10)
    got = onnx_predictor.predict_images(examples, 10)
    assert [[label for label, _ in r] for r in got] == [[label for label, _ in r] for r in expected]
    assert np.allclose([[p for _, p in r] for r in got], [[p for _, p in r] for r in expected])


def test_a_network_that_does_not_export_is_served_by_pytorch(monkeypatch):
    def refuse(*_args):
        raise ExportError("this network cannot be exported to ONNX: test")

    monkeypatch.setattr(OnnxNetwork, "of", refuse)
    predictor = image_predictor("onnx")
    assert predictor.runtime == "torch"
    assert len(predictor.predict_images(images(2), 1)) == 2


def test_a_lone_request_does_not_wait_for_the_budget():
    batcher, _, _ = new_batcher(image_predictor(), max_size=64, budget_s=5.0)

    async def lone():
        started = time.perf_counter()
        await batcher.submit(images(1), 1)
        return time.perf_counter() - started

    assert asyncio.run(lone()) < 2.5  # half the budget, on a busy machine


def test_a_bad_example_fails_only_its_own_request():
    batcher, metrics, arrivals = new_batcher(image_predictor(), max_size=8, budget_s=0.05)
    good = images(3)
    requests = [[good[0]], [b"not an image"], [good[1], b"nor this"], [good[2]]]
    answers = asyncio.run(submit_concurrently(batcher, requests, arrivals))
    assert [isinstance(a, list) for a in answers] == [True, False, False, True]
    assert all(isinstance(a, DatasetError) for a in answers[1:3])  # NotAnImage is one
    assert "item 1" in str(answers[2])
    assert batch_sizes(metrics)[0] == 1  # one batch for all four


def test_a_request_over_max_size_is_split_and_the_others_wait_one_batch():
    predictor = text_predictor("bag_of_embeddings")
    batcher, metrics, _ = new_batcher(predictor, max_size=8, budget_s=0)
    big, small = texts(30), texts(1)
    done: list[str] = []

    async def both():
        big_answer, small_answer = batcher.submit(big, 3), batcher.submit(small, 3)
        big_answer.add_done_callback(lambda _: done.append("big"))
        small_answer.add_done_callback(lambda _: done.append("small"))
        return await big_answer, await small_answer

    big_ranked, small_ranked = asyncio.run(both())
    assert done == ["small", "big"]  # answered in the second batch, not after all of big
    assert big_ranked == predictor.predict_texts(big, 3)
    assert small_ranked == predictor.predict_texts(small, 3)
    batches, examples_run = batch_sizes(metrics)
    assert (batches, examples_run) == (5, 31)  # 8, then small, then 8, 8, 6
    assert (
        metrics.registry.get_sample_value(
            "trainserve_batch_size_bucket", {"model": "m", "le": "8.0"}
        )
        == batches
    )


def test_a_bad_image_in_a_later_slice_is_named_by_its_place_in_the_request():
    batcher, _, _ = new_batcher(image_predictor(), max_size=8, budget_s=0)
    examples = images(20)
    examples[13] = b"not an image"

    async def submit():
        return await batcher.submit(examples, 3)

    with pytest.raises(DatasetError, match=r"^item 13: not a decodable image"):
        asyncio.run(submit())
