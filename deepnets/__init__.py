"""deepnets: a DeepNets-1M-style generator of neural architectures.

    from deepnets import Network, get_split
    config = get_split("test")[0]            # architecture 0 of the test split
    net = config.build(num_classes=10)       # an nn.Module for 32x32 input

Meta-training batches: ``MetaBatchLoader(MetaBatchDataset(get_split("train"), 8))``.
"""

from deepnets.builder import NetBuilder
from deepnets.cost import count_flops, num_flops, num_params
from deepnets.dataset import ArchRecord, DatasetFormatError, describe, export_split, read_records
from deepnets.generator import SPLIT_NAMES, SamplerConfig, Split, get_split, sample_architecture
from deepnets.genotypes import DARTS, PDARTS, VIT, Genotype
from deepnets.net import NetConfig, Network
from deepnets.ops import OP_NAMES, make_op
from deepnets.predefined import PREDEFINED, PREDEFINED_NAMES, build_predefined

_LAZY = {"MetaBatchDataset", "MetaBatchLoader"}


def __getattr__(name: str) -> object:
    # The loader needs torch_geometric and ghn.graph; import them only when it is used.
    if name in _LAZY:
        from deepnets import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'deepnets' has no attribute {name!r}")


__all__ = [
    "DARTS", "OP_NAMES", "PDARTS", "PREDEFINED", "PREDEFINED_NAMES", "SPLIT_NAMES", "VIT",
    "ArchRecord", "DatasetFormatError", "Genotype", "MetaBatchDataset", "MetaBatchLoader", "NetConfig",
    "NetBuilder", "Network", "SamplerConfig", "Split",
    "build_predefined", "count_flops", "describe", "export_split", "get_split", "make_op",
    "num_flops", "num_params", "read_records", "sample_architecture",
]
