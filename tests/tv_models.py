"""Helpers shared by tests: the torchvision classification models, built cheaply."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
import torchvision
from torch import nn

TORCHVISION_MODELS: list[str] = torchvision.models.list_models(module=torchvision.models)


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """Skip torch.nn.init during construction: tests overwrite every value anyway, and
    initialising a 645M-parameter RegNet costs far more than the test itself."""
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda tensor, *a, **k: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(nn.init, n, f)


def make_model(name: str, num_classes: int = 10, device: str = "meta") -> nn.Module:
    """A torchvision model, its parameters left uninitialised (buffers such as relative
    position indices are computed as usual).

    device="meta": no memory at all where the constructor allows it (RegNets compute their
    widths with tensors and are built on the CPU instead); device="cpu": real memory."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GoogLeNet / Inception init-weights notices
        if device == "meta":
            try:
                with torch.device("meta"):
                    return torchvision.models.get_model(name, num_classes=num_classes)
            except (NotImplementedError, RuntimeError):
                pass
        with _no_init():
            return torchvision.models.get_model(name, num_classes=num_classes).to(device)
