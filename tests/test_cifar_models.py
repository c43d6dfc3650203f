"""ghn.cifar_models: torchvision classifiers adapted to 32x32 input."""

from __future__ import annotations

import pytest
import torch

import ghn
from ghn.cifar_models import adaptation


@pytest.mark.parametrize("name", ["resnet18", "vit_b_16", "mobilenet_v2"])
def test_adapted_models_classify_32x32_images(name: str) -> None:
    torch.manual_seed(0)
    model = ghn.cifar_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_resnets_get_the_cifar_stem() -> None:
    for name in ("resnet18", "resnet50", "wide_resnet50_2"):
        model = ghn.cifar_model(name)
        assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1), name
        assert isinstance(model.maxpool, torch.nn.Identity), name
    # 32x32 stays 32x32 through the stem, so the last stage sees 4x4 maps, not 1x1
    model = ghn.cifar_model("resnet18").eval()
    features = torch.nn.Sequential(*list(model.children())[:-2])
    with torch.no_grad():
        assert features(torch.randn(1, 3, 32, 32)).shape == (1, 512, 4, 4)


def test_adaptation_is_described_for_every_family() -> None:
    assert adaptation("vit_b_16").kwargs == {"image_size": 32}
    assert adaptation("convnext_tiny").patch is None and "unchanged" in adaptation("convnext_tiny").description
    assert adaptation("alexnet").description == "unchanged (runs at 32x32 as is)"


def test_unknown_model_names_are_refused() -> None:
    with pytest.raises(ValueError, match=r"'resnet19' is not a torchvision classification model; "
                                         r"did you mean 'resnet18'.*list_models"):
        ghn.cifar_model("resnet19")
    with pytest.raises(ValueError, match=r"'zzzz' is not a torchvision classification model; torchvision"):
        ghn.cifar_model("zzzz")  # nothing close: no suggestion
