"""Named reference architectures, built like sampled ones (for evaluation on unseen nets)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from torch import nn

from deepnets.genotypes import DARTS, PDARTS, VIT
from deepnets.net import NetConfig

# Published CIFAR-10 evaluation settings for the searched cells (C=36, 20 cells, 3.3-3.4M
# parameters). The ViT-like network pools in the stem, so its attention runs on 16x16
# tokens at 32x32 input, like a vision transformer's patches.
PREDEFINED: Mapping[str, NetConfig] = MappingProxyType({
    "darts": NetConfig(DARTS, C=36, n_cells=20),
    "pdarts": NetConfig(PDARTS, C=36, n_cells=20),
    "vit": NetConfig(VIT, C=48, n_cells=12, stem_pool=True),
})
PREDEFINED_NAMES: tuple[str, ...] = (*PREDEFINED, "resnet50")


def build_predefined(name: str, num_classes: int = 10, imagenet_input: bool = False) -> nn.Module:
    """Build one of ``PREDEFINED_NAMES``.

    ``resnet50`` is torchvision's; for 32x32 input (``imagenet_input=False``) its stem is
    adapted as usual for CIFAR: a 3x3 stride-1 first convolution and no max pool.
    """
    if name == "resnet50":
        import torchvision  # only this architecture needs it, and it is slow to import

        model = torchvision.models.resnet50(num_classes=num_classes)
        if not imagenet_input:
            model.conv1 = nn.Conv2d(3, 64, 3, 1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        return model
    try:
        config = PREDEFINED[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {PREDEFINED_NAMES}") from None
    return config.build(num_classes, imagenet_input)
