import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from models.architectures import build_network
from models.checkpoint import make_checkpoint, network_from_checkpoint
from models.data import TEXT_TASK
from models.export import (
    ExportError,
    OnnxNetwork,
    export_onnx,
    onnx_with_metadata,
    quantize_int8,
    quantize_onnx_int8,
)


def test_int8_copy_quantises_linear_layers_and_keeps_the_answers():
    torch.manual_seed(0)
    network = build_network("text_cnn", {"num_classes": 2, "vocab_size": 40}).eval()
    quantised = quantize_int8(network)
    assert type(network.fc) is torch.nn.Linear  # the original is untouched
    assert "quantized" in type(quantised.fc).__module__
    tokens = torch.randint(1, 40, (16, 9))
    with torch.inference_mode():
        expected, got = network(tokens), quantised(tokens)
    assert torch.equal(expected.argmax(1), got.argmax(1))
    assert torch.allclose(expected, got, atol=0.05)


@pytest.mark.parametrize(
    ("arch", "args", "example"),
    [
        ("fast_resnet", {"base_width": 8, "height": 16, "width": 16}, torch.randn(2, 3, 16, 16)),
        ("text_cnn", {"vocab_size": 40}, torch.randint(1, 40, (2, 7))),
    ],
)
def test_onnx_files_answer_like_the_network_for_any_batch_and_length(tmp_path, arch, args, example):
    torch.manual_seed(0)
    network = build_network(arch, {"num_classes": 3, **args}).eval()
    path = export_onnx(network, example, tmp_path / "model.onnx")
    other = torch.cat([example] * 3)
    if other.ndim == 2:
        other = torch.cat([other, other], dim=1)  # a longer text than the example
    with torch.inference_mode():
        expected = network(other)
    assert torch.allclose(OnnxNetwork(path, threads=1)(other), expected, atol=1e-4)
    int8 = quantize_onnx_int8(path, tmp_path / "model.int8.onnx")
    assert OnnxNetwork(int8, threads=1)(other).shape == expected.shape


def test_networks_onnx_cannot_express_are_refused_by_name(tmp_path):
    network = build_network("bag_of_embeddings", {"num_classes": 2, "vocab_size": 40})
    with pytest.raises(ExportError, match="BagOfEmbeddings cannot be exported to ONNX"):
        export_onnx(network, torch.randint(1, 40, (2, 5)), tmp_path / "model.onnx")


def test_networks_export_from_several_threads_at_once():
    """An API process loads versions in threads; torch.onnx.export keeps global state."""
    torch.manual_seed(0)
    args = {"num_classes": 3, "base_width": 8, "height": 16, "width": 16}
    networks = [build_network("fast_resnet", args).eval() for _ in range(6)]
    example = torch.randn(2, 3, 16, 16)
    with ThreadPoolExecutor(6) as pool:
        served = list(pool.map(lambda n: OnnxNetwork.of(n, example, threads=1), networks))
    with torch.inference_mode():
        for network, onnx in zip(networks, served, strict=True):
            assert torch.allclose(onnx(example), network(example), atol=1e-4)


def test_a_checkpoint_exports_with_its_metadata_unless_its_network_has_no_onnx_form():
    torch.manual_seed(0)
    args = {"num_classes": 2, "vocab_size": 40}
    checkpoint = make_checkpoint(
        task=TEXT_TASK,
        arch="text_cnn",
        model_args=args,
        classes=["negative", "positive"],
        preprocessing={"vocabulary": {"tokens": ["<pad>", "<unk>"]}},
        network=build_network("text_cnn", args),
        epoch=1,
        metrics={},
    )
    onnx = OnnxNetwork(onnx_with_metadata(checkpoint), threads=1)
    tokens = torch.randint(1, 40, (3, 11))  # longer than the example the export saw
    with torch.inference_mode():
        expected = network_from_checkpoint(checkpoint)(tokens)
    assert torch.allclose(onnx(tokens), expected, atol=1e-4)
    metadata = onnx.session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["classes"]) == ["negative", "positive"]
    assert metadata["task"] == TEXT_TASK and metadata["arch"] == checkpoint["arch"]

    no_onnx_form = {**checkpoint, "arch": "bag_of_embeddings"}
    no_onnx_form["state_dict"] = build_network("bag_of_embeddings", args).state_dict()
    with pytest.raises(ExportError, match="BagOfEmbeddings cannot be exported"):
        onnx_with_metadata(no_onnx_form)
