"""ghn: predict every parameter of any PyTorch model in one forward pass.

    import torchvision, ghn
    meta = ghn.from_pretrained("path/or/org-repo")   # or ghn.GHN(ghn.GHNConfig()) to train one
    model = ghn.predict(torchvision.models.resnet18(num_classes=10), meta)

Public API (imported on first use, so ``import ghn.data`` stays light):
    build_graph(model, input_shape)  the computational graph (`ghn.graph.Graph`, a PyG Data)
    GHN, GHNConfig                   the meta-model and its configuration
    predict(model, meta_model)       overwrite every trainable parameter with its prediction
    functional_forward               run a network with predicted tensors (training path)
    use_batch_stats, calibrate_bn    evaluate predicted networks honestly
    from_pretrained                  load a meta-model by name, path or hub repository
    widen(meta_model, hid, dec_hid=) a wider copy of a meta-model that predicts the same parameters
    cifar_model(name, num_classes=)  a torchvision classifier adapted to 32x32 input, as benchmarked
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "GHN": "ghn.model",
    "GHNConfig": "ghn.config",
    "Graph": "ghn.graph",
    "GraphError": "ghn.graph",
    "build_graph": "ghn.graph",
    "calibrate_bn": "ghn.prediction",
    "cifar_model": "ghn.cifar_models",
    "functional_forward": "ghn.prediction",
    "predict": "ghn.prediction",
    "use_batch_stats": "ghn.prediction",
    "from_pretrained": "ghn.hub",
    "widen": "ghn.widen",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ghn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
