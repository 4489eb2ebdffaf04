"""Checkpoint format: everything inference needs to rebuild the network and its input.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
torch.load(..., weights_only=True) opens it and no arbitrary object is unpickled.
"""

from typing import Any

from torch import nn

from models.architectures import build_network

FORMAT_VERSION = 1


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
