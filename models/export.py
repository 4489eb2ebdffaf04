"""Compressed and portable copies of a trained network: int8 dynamic quantisation, ONNX.

Dynamic quantisation stores the weights of linear and recurrent layers as int8 and
quantises their activations on the fly; convolutions stay float32, so it pays most for
text and transformer networks. ONNX export writes a graph that ONNX Runtime serves without
PyTorch; ONNX Runtime's own dynamic quantisation then makes an int8 copy of that file.
"""

import copy
import io
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from models.checkpoint import file_metadata, network_from_checkpoint
from models.data import IMAGE_TASK
from models.text import shortest_input

QUANTISED_LAYERS = {nn.Linear, nn.GRU, nn.LSTM}
# torch.onnx.export keeps its state in globals: two exports at once (an API process loads
# versions in threads) fail with "GLOBALS.in_onnx_export must be True".
_EXPORTING = threading.Lock()


class ExportError(ValueError):
    """This network cannot be exported; the message says why."""


def quantize_int8(network: nn.Module) -> nn.Module:
    """An int8 copy for CPU inference (the network itself is left as it is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao notices that torchao is its successor
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(network).eval(), QUANTISED_LAYERS, dtype=torch.qint8
        )


def export_onnx(network: nn.Module, example: torch.Tensor, path: Path | io.BytesIO):
    """An ONNX graph taking `input` (any batch size; any length for token ids), giving
    `logits`, written to a file or a buffer."""
    dynamic = {0: "batch", 1: "length"} if example.ndim == 2 else {0: "batch"}
    try:
        with _EXPORTING, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                copy.deepcopy(network).eval(),
                (example,),
                # torch.onnx.export writes to a buffer too, though its annotation says path
                path if isinstance(path, io.BytesIO) else str(path),  # type: ignore[arg-type]
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": dynamic, "logits": {0: "batch"}},
                dynamo=False,  # the TorchScript exporter handles dynamic axes without guards
            )
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        name = type(network).__name__
        raise ExportError(f"{name} cannot be exported to ONNX: {first_line}") from exc
    return path


def onnx_bytes(network: nn.Module, example: torch.Tensor) -> bytes:
    """The network's ONNX graph (as export_onnx writes it), in memory."""
    buffer = io.BytesIO()
    export_onnx(network, example, buffer)
    return buffer.getvalue()


def example_input(checkpoint: dict, network: nn.Module) -> torch.Tensor:
    """One input of the shape the network takes: a normalised image, or token ids."""
    if checkpoint["task"] == IMAGE_TASK:
        image = checkpoint["preprocessing"]["image"]
        return torch.zeros(1, image["channels"], image["height"], image["width"])
    return torch.ones(1, max(2, shortest_input(network)), dtype=torch.long)


def onnx_with_metadata(checkpoint: dict) -> bytes:
    """The checkpoint's network as an ONNX file, with what a caller needs around it (task,
    arch, classes, preprocessing: normalisation or vocabulary) as its metadata
    (models.checkpoint.file_metadata)."""
    import onnx

    network = network_from_checkpoint(checkpoint)
    model = onnx.load_from_string(onnx_bytes(network, example_input(checkpoint, network)))
    onnx.helper.set_model_props(model, file_metadata(checkpoint))
    return model.SerializeToString()


def quantize_onnx_int8(source: Path, target: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return target


class OnnxNetwork:
    """An ONNX Runtime session called like a network: tensor in, logits tensor out."""

    def __init__(self, model: Path | bytes, threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        # Idle pool threads sleep instead of spinning: they share the cores with the server.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            model if isinstance(model, bytes) else str(model),
            options,
            providers=["CPUExecutionProvider"],
        )

    @classmethod
    def of(cls, network: nn.Module, example: torch.Tensor, threads: int) -> "OnnxNetwork":
        """The network exported in memory and loaded into ONNX Runtime."""
        return cls(onnx_bytes(network, example), threads)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        [logits] = self.session.run(None, {"input": inputs.numpy()})
        return torch.from_numpy(logits)
