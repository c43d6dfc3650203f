"""Torchvision classifiers adapted to 32x32 input, as ``make bench-cifar`` measures them.

    import ghn
    model = ghn.cifar_model("resnet18")      # CIFAR ResNet stem: 3x3 stride-1 conv, no max-pool
    model = ghn.predict(model)               # the README's "ResNet-18 (32x32)" figures
    ghn.use_batch_stats(model)

Most torchvision models run on 32x32 images unchanged, but some lose the image on the
way: the ImageNet ResNet stem (7x7 stride-2 conv, then a stride-2 max-pool) leaves 8x8
maps for the first block, and ViT needs to be told the image size. Each family's change
is an `Adaptation`; its ``description`` is recorded next to every benchmark result.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torchvision
from torch import nn

__all__ = ["ADAPTATIONS", "Adaptation", "adaptation", "check_classifier_name", "cifar_model"]


def _cifar_resnet_stem(model: nn.Module) -> None:
    # The usual CIFAR stem keeps 32x32 for the first stage and 4x4 at the last.
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


@dataclass(frozen=True)
class Adaptation:
    """How a torchvision family is adapted to 32x32 input.

    Attributes:
        prefixes: model names it applies to start with one of these.
        description: one line for result tables.
        kwargs: extra arguments to ``torchvision.models.get_model``.
        patch: changes the built model in place (``None``: nothing to change).
    """

    prefixes: tuple[str, ...]
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    patch: Callable[[nn.Module], None] | None = None


ADAPTATIONS: tuple[Adaptation, ...] = (
    Adaptation(("resnet", "resnext", "wide_resnet"), "3x3 stride-1 stem conv, no max-pool (CIFAR ResNet stem)",
               patch=_cifar_resnet_stem),
    Adaptation(("vit_",), "image_size=32 (ViT-B/16: a 2x2 grid of 16x16 patches, 4 tokens + class token)",
               kwargs={"image_size": 32}),
    Adaptation(("mobilenet", "efficientnet", "mnasnet", "regnet"),
               "unchanged: five stride-2 stages take 32x32 to 1x1 before pooling"),
    Adaptation(("convnext",), "unchanged: the 4x4 stride-4 stem gives 8x8 maps, 1x1 at the last stage"),
)
_UNCHANGED = Adaptation((), "unchanged (runs at 32x32 as is)")


def adaptation(name: str) -> Adaptation:
    """The adaptation `cifar_model` applies to torchvision model `name`."""
    return next((a for a in ADAPTATIONS if name.startswith(a.prefixes)), _UNCHANGED)


def check_classifier_name(name: str) -> None:
    """Raise ValueError, naming the closest matches, unless `name` is one of torchvision's
    image classification models (``torchvision.models.list_models(module=torchvision.models)``)."""
    names = torchvision.models.list_models(module=torchvision.models)
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    raise ValueError(f"{name!r} is not a torchvision classification model; {hint}"
                     "torchvision.models.list_models(module=torchvision.models) lists them")


def cifar_model(name: str, num_classes: int = 10) -> nn.Module:
    """Torchvision classification model `name` with `num_classes` outputs, adapted to
    32x32 input (see `ADAPTATIONS`), with PyTorch's default random initialisation.

    Raises:
        ValueError: `name` is not a torchvision classification model.
    """
    check_classifier_name(name)
    adapt = adaptation(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GoogLeNet/Inception init-weight notices
        model = torchvision.models.get_model(name, num_classes=num_classes, **adapt.kwargs)
    if adapt.patch is not None:
        adapt.patch(model)
    return model
