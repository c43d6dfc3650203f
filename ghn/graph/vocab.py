"""The graph's vocabularies (node types, folded activations, parameter roles) and the
canonical 4-D view of a parameter shape the meta-model reads."""

from __future__ import annotations

import math
from collections.abc import Sequence


OPS: tuple[str, ...] = (
    "input",
    "conv",  # plain convolution (1-D, 2-D, 3-D, transposed)
    "dw_conv",  # grouped / depthwise convolution
    "dil_conv",  # dilated convolution
    "linear",
    "bn",  # batch norm
    "ln",  # layer norm
    "gn",  # group norm
    "in",  # instance norm
    "msa",  # multi-head self-attention with in-projection (nn.MultiheadAttention)
    "attention",  # scaled dot-product attention without parameters
    "matmul",
    "sum",
    "mul",  # elementwise product of graph tensors (squeeze-excite gating, ...)
    "concat",
    "max_pool",
    "avg_pool",
    "glob_avg",  # global average pooling / mean over positions
    "cls_token",
    "pos_emb",
    "layer_scale",
    "rel_pos_bias",
    "bias",  # a parameter added on its own
    "embedding",
    "param",  # another op applied to a parameter
    "unknown",
)
OP_ID: dict[str, int] = {op: i for i, op in enumerate(OPS)}

ACTS: tuple[str, ...] = (
    "none", "relu", "gelu", "silu", "sigmoid", "hardswish", "hardsigmoid", "tanh", "softmax", "other",
)
ACT_ID: dict[str, int] = {a: i for i, a in enumerate(ACTS)}
RELU_LIKE = frozenset({"relu"})  # activations after which GHN-2 scales weights with beta = 2

# Parameter roles, used by the decoders and by parameter normalisation.
ROLES: tuple[str, ...] = ("weight", "bias", "scale")
ROLE_ID: dict[str, int] = {r: i for i, r in enumerate(ROLES)}


def canonical_shape(shape: Sequence[int], conv: bool = False) -> tuple[int, int, int, int]:
    """Map a parameter shape to the 4-D ``(c_out, c_in, k_h, k_w)`` view the meta-model uses.

    Convolution weights keep their layout (1-D kernels become ``1 x k``, 3-D kernels fold
    depth into ``c_in``). Other tensors drop singleton dimensions first, so a class token
    ``(1, 1, D)`` is a vector ``(D, 1, 1, 1)`` and a positional embedding ``(1, N, D)`` a
    matrix ``(N, D, 1, 1)``. The product of the four numbers is always the tensor's numel.
    """
    shape = tuple(int(s) for s in shape)
    if conv and len(shape) >= 3:
        o, i, *k = shape
        if len(k) == 1:
            return (o, i, 1, k[0])
        return (o, i * math.prod(k[:-2]), k[-2], k[-1])
    s = [d for d in shape if d != 1] or [1]
    if len(s) == 1:
        return (s[0], 1, 1, 1)
    if len(s) == 2:
        return (s[0], s[1], 1, 1)
    return (s[0], s[1], 1, math.prod(s[2:]))
