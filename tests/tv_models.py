"""Helpers shared by tests: the torchvision classification models, built cheaply."""

from __future__ import annotations

import warnings

import torch
import torchvision
from torch import nn

TORCHVISION_MODELS: list[str] = torchvision.models.list_models(module=torchvision.models)


def make_model(name: str, num_classes: int = 10, device: str = "meta") -> nn.Module:
    """A torchvision model; on the meta device when its constructor allows it (RegNets
    compute their widths with tensors and must be built on the CPU)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GoogLeNet / Inception init-weights notices
        if device == "meta":
            try:
                with torch.device("meta"):
                    return torchvision.models.get_model(name, num_classes=num_classes)
            except (NotImplementedError, RuntimeError):
                pass
        return torchvision.models.get_model(name, num_classes=num_classes)
