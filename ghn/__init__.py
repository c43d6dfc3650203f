"""ghn: predict every parameter of any PyTorch model in one forward pass.

    import torchvision, ghn
    meta = ghn.GHN(ghn.GHNConfig())                   # or a trained one (see the README)
    model = ghn.predict(torchvision.models.resnet18(num_classes=10), meta)

Public API:
    build_graph(model, input_shape)  the computational graph (`ghn.graph.Graph`, a PyG Data)
    GHN, GHNConfig                   the meta-model and its configuration
    predict(model, meta_model)       overwrite every trainable parameter with its prediction
    from_pretrained(name_or_path)    a pretrained meta-model: registered name, local path or hub id
                                     (saving and sharing: ghn.hub.save_pretrained, ghn.hub.push_to_hub)
    functional_forward               run a network with predicted tensors (training path)
    use_batch_stats, calibrate_bn    evaluate predicted networks honestly
"""

from ghn.config import GHNConfig
from ghn.graph import Graph, GraphError, build_graph
from ghn.hub import from_pretrained
from ghn.model import GHN
from ghn.predict import calibrate_bn, functional_forward, predict, use_batch_stats

__version__ = "0.1.0"
__all__ = [
    "GHN", "GHNConfig", "Graph", "GraphError", "build_graph", "calibrate_bn", "from_pretrained",
    "functional_forward", "predict", "use_batch_stats",
]
