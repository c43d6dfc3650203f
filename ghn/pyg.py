"""torch_geometric's graph containers, imported without its TorchScript deprecation warning.

torch_geometric 2.8 calls ``torch.jit.script`` when it is imported, and torch 2.11 and later
answer that with a FutureWarning (pyg-team/pytorch_geometric#10697; the fix is pending
upstream). ghn uses no TorchScript, so the warning would tell our users nothing on every
``import ghn``; it is silenced for this one import only, and every module of ours takes
`Data` and `Batch` from here.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from torch_geometric.data import Batch, Data

__all__ = ["Batch", "Data"]
