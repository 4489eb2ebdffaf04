"""Checkpoint format: everything inference needs to rebuild the network and its input.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
torch.load(..., weights_only=True) opens it and no arbitrary object is unpickled.
"""

import json
from typing import Any

from torch import nn

from models.architectures import build_network

FORMAT_VERSION = 1
# What a weights file other than the checkpoint (safetensors, ONNX) carries beside the
# network, in its string-to-string metadata.
FILE_METADATA = ("format_version", "task", "arch", "model_args", "classes", "preprocessing")


def make_checkpoint(
    *,
    task: str,
    arch: str,
    model_args: dict,
    classes: list[str],
    preprocessing: dict,
    network: nn.Module,
    epoch: int,
    metrics: dict,
    **extra: Any,
) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "task": task,
        "arch": arch,
        "model_args": model_args,
        "classes": classes,
        "preprocessing": preprocessing,
        "epoch": epoch,
        "metrics": metrics,
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        **extra,
    }


def network_from_checkpoint(checkpoint: dict) -> nn.Module:
    network = build_network(checkpoint["arch"], checkpoint["model_args"])
    network.load_state_dict(checkpoint["state_dict"])
    return network.eval()


def file_metadata(checkpoint: dict) -> dict[str, str]:
    """A safetensors or ONNX file's metadata: the checkpoint's own keys and layout (an image
    network's preprocessing under `image`: channels, height, width, mean, std), strings as
    they are and everything else as JSON, so each format reads the same."""
    fields = {key: checkpoint[key] for key in FILE_METADATA}
    return {key: v if isinstance(v, str) else json.dumps(v) for key, v in fields.items()}
