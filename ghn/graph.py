"""The computational graph of any PyTorch model, as the meta-model reads it.

`build_graph(model)` runs the model's forward once on *meta* tensors (no memory, no real
computation) under a `TorchFunctionMode` that records every torch function call:

- an op that owns parameters (conv, linear, norms, attention in-projection, ...) becomes a
  node holding those parameters;
- an elementwise op that consumes a parameter directly gets the role of that parameter
  (``x + pos_embedding`` is a ``pos_emb`` node, ``layer_scale * x`` a ``layer_scale`` node,
  ``cat([cls_token, x])`` a ``cls_token`` node, ``table[index]`` a ``rel_pos_bias`` node);
- sums, products and concatenations of two or more graph tensors, pooling and matrix
  products become parameter-free nodes;
- activations are folded into the node that produced their input (as ``act``), and
  views, reshapes, dropout and indexing pass data through without a node: this keeps the
  graph as short as GHN-2's, which matters because message passing is sequential in depth;
- any other op on graph tensors becomes an ``unknown`` node (logged once per op name),
  never dropped.

Nodes are numbered in execution order, which is a topological order; the same model
always gives the same graph. Every parameter tensor of the model belongs to exactly one
node; a tensor used twice (tied weights, a module called twice) belongs to the first node
that uses it, and parameters the forward never touches get an isolated node of the type
of their module, with a warning.

Vocabulary of node types: `OPS`; of folded activations: `ACTS`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ghn.pyg import Data

log = logging.getLogger(__name__)

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

_ACT_OF: dict[str, str] = {
    **dict.fromkeys(("relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_"), "relu"),
    **dict.fromkeys(("gelu",), "gelu"),
    **dict.fromkeys(("silu", "silu_"), "silu"),
    **dict.fromkeys(("sigmoid", "sigmoid_"), "sigmoid"),
    **dict.fromkeys(("hardswish", "hardswish_"), "hardswish"),
    **dict.fromkeys(("hardsigmoid", "hardsigmoid_"), "hardsigmoid"),
    **dict.fromkeys(("tanh", "tanh_"), "tanh"),
    **dict.fromkeys(("softmax", "log_softmax", "_softmax"), "softmax"),
    **dict.fromkeys(("elu", "elu_", "selu", "celu", "mish", "softplus", "rrelu"), "other"),
}
# Ops that move or reshape data without computing: the output stays the input's node.
_PASS = frozenset(
    "view view_as reshape reshape_as permute transpose transpose_ t flatten unflatten contiguous "
    "expand expand_as squeeze squeeze_ unsqueeze unsqueeze_ clone detach to float half double "
    "type type_as chunk split unbind narrow select __getitem__ movedim swapaxes roll flip pad "
    "masked_fill masked_fill_ stochastic_depth requires_grad_ cpu cuda pixel_shuffle "
    "pixel_unshuffle channel_shuffle native_channel_shuffle repeat tile abs neg __neg__ "
    "clamp clamp_ clip exp log sqrt rsqrt pow __pow__ square normalize zero_ fill_".split()
)
# Ops whose outputs are new constants even when called on a graph tensor.
_CONST = frozenset(
    "new_zeros new_ones new_empty new_full new_tensor zeros_like ones_like empty_like full_like "
    "rand_like randn_like randint_like bernoulli bernoulli_ arange size dim numel __len__ "
    "__setitem__ __get__ __bool__ __int__ __float__ __index__ item tolist eq ne lt le gt ge "
    "__eq__ __ne__ __lt__ __le__ __gt__ __ge__ isfinite isnan any all argmax argmin".split()
)
_DROPOUT = frozenset(
    "dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout".split()
)
_SUM = frozenset("add add_ __add__ __iadd__ __radd__ sub sub_ __sub__ __isub__ __rsub__".split())
_MUL = frozenset(
    "mul mul_ __mul__ __imul__ __rmul__ div div_ __truediv__ __itruediv__ __rtruediv__ addcmul".split()
)
_CAT = frozenset(("cat", "concat", "concatenate", "stack", "hstack", "vstack"))
_INDEX = frozenset(("__getitem__", "index_select", "gather", "take", "embedding_bag"))
_MATMUL = frozenset(("matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "einsum", "baddbmm", "addmm"))
_NORM = {"batch_norm": "bn", "layer_norm": "ln", "group_norm": "gn", "instance_norm": "in", "rms_norm": "ln"}
_CONV = frozenset(
    "conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d convolution".split()
)
_MODULE_OP = (  # op type of a parameter the forward never used, from its module's class
    (nn.modules.conv._ConvNd, "conv"),
    (nn.Linear, "linear"),
    (nn.modules.batchnorm._BatchNorm, "bn"),
    (nn.LayerNorm, "ln"),
    (nn.GroupNorm, "gn"),
    (nn.Embedding, "embedding"),
    (nn.MultiheadAttention, "msa"),
)


class GraphError(ValueError):
    """The model cannot be turned into a graph; the message says why and what to do."""


@dataclass
class _Node:
    op: str
    shape: tuple[int, int, int, int] = (0, 0, 0, 0)
    act: str = "none"
    params: list[tuple[str, str]] = field(default_factory=list)  # (parameter name, role)
    preds: list[int] = field(default_factory=list)
    name: str = ""


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


class Graph(Data):
    """A model's computational graph as a `torch_geometric.data.Data`.

    Node tensors (``n`` nodes, in topological order):
        op [n] long: index into `OPS`; act [n] long: index into `ACTS` (folded activation);
        shape [n, 4] long: canonical shape of the node's main parameter (zeros if none);
        level [n] long: longest path from a source (nodes of a level can be updated at once);
        rlevel [n] long: longest path to a sink (the same for the backward traversal);
        relu_after [n] bool: a ReLU follows the node (directly or after a norm), for GHN-2's
        parameter normalisation; head [n] bool: the node feeds the model output without
        another parameterised op in between (classifier layers).
    Edges:
        edge_index [2, E] long: data-flow edges u -> v;
        ve_index [2, V] long, ve_dist [V] uint8: virtual edges u -> v with shortest-path
        length 1 < s <= s_max (empty when built with s_max < 2).
    Parameters (``P`` tensors, in graph order):
        param_node_index [P] long: the node that owns each parameter;
        param_role [P] long: index into `ROLES`; param_shape [P, 4] long: canonical shape;
        param_names: list[str] of ``P`` names as in ``model.named_parameters()``;
        param_dims: list[tuple[int, ...]] of their real shapes.
    Per graph: node_names list[str] (module path or function of each node), s_max int.

    Graphs batch with ``torch_geometric.data.Batch.from_data_list``; ``*_index`` fields are
    offset by the node count of the graphs before them, as usual in PyG.
    """

    def to_networkx(self) -> nx.DiGraph:
        """A `networkx.DiGraph` with node attributes ``op``, ``act``, ``shape``, ``params``, ``name``."""
        g = nx.DiGraph()
        owned: dict[int, list[str]] = {}
        for node, name in zip(self.param_node_index.tolist(), self.param_names):
            owned.setdefault(node, []).append(name)
        for v in range(self.num_nodes):
            g.add_node(
                v,
                op=OPS[int(self.op[v])],
                act=ACTS[int(self.act[v])],
                shape=tuple(self.shape[v].tolist()),
                params=owned.get(v, []),
                name=self.node_names[v],
                level=int(self.level[v]),
            )
        g.add_edges_from(self.edge_index.t().tolist())
        return g

    def draw(self, path: str | Path, title: str | None = None) -> Path:
        """Draw the graph to a PNG, nodes laid out by level and coloured by op type."""
        return draw_graph(self, path, title=title)


# --------------------------------------------------------------------------- tracing


def _is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Tensors inside nested lists, tuples (named too) and dicts; faster than pytree here."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in _tensors(x)]
    if isinstance(obj, dict):
        return [t for x in obj.values() for t in _tensors(x)]
    return []


class _Tracer(TorchFunctionMode):
    """Records torch function calls on meta tensors as graph nodes."""

    def __init__(self, param_names: dict[int, str]):
        super().__init__()
        self.nodes: list[_Node] = []
        self.node_of: dict[int, int] = {}  # id(tensor) -> node that produced it
        self.param_of: dict[int, str] = dict(param_names)  # id(tensor) -> parameter it views
        self.owned: set[str] = set()
        self.unknown_ops: set[str] = set()
        self.keep: list[torch.Tensor] = []  # keeps traced tensors alive so ids stay unique
        self.outputs: list[int] = []  # nodes producing the model's output(s)

    # -- bookkeeping
    def add_node(self, op: str, preds: Sequence[int] = (), **kw: Any) -> int:
        self.nodes.append(_Node(op, preds=sorted(set(preds)), **kw))
        return len(self.nodes) - 1

    def mark(self, out: Any, node: int) -> None:
        for t in _tensors(out):
            self.node_of[id(t)] = node
            self.keep.append(t)

    def own(self, node: int, tensors: Sequence[Any], roles: Sequence[str]) -> None:
        """Give `node` every not-yet-owned parameter among `tensors` (None entries skipped)."""
        for t, role in zip(tensors, roles):
            name = self.param_of.get(id(t)) if _is_tensor(t) else None
            if name is not None and name not in self.owned:
                self.owned.add(name)
                self.nodes[node].params.append((name, role))
                if not self.nodes[node].name or len(self.nodes[node].params) == 1:
                    self.nodes[node].name = name.rpartition(".")[0] or name  # module path
                if self.nodes[node].shape == (0, 0, 0, 0):
                    conv = self.nodes[node].op in ("conv", "dw_conv", "dil_conv")
                    self.nodes[node].shape = canonical_shape(t.shape, conv=conv)

    # -- the hook
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _CONST:
            return func(*args, **kwargs)
        flat = _tensors(args) + (_tensors(kwargs) if kwargs else [])
        srcs = [self.node_of[id(t)] for t in flat if id(t) in self.node_of]
        params = [t for t in flat if id(t) in self.param_of]
        if not srcs and not params:
            return func(*args, **kwargs)

        if name in _ACT_OF and srcs and not params:
            node = self.nodes[srcs[0]]
            if node.act == "none":
                node.act = _ACT_OF[name]
            out = _same_shape(func, args, kwargs)
            self.mark(out, srcs[0])
            return out
        if name in _CONV:
            return self._weighted(func, args, kwargs, srcs, _conv_op(name, args, kwargs))
        if name == "linear" or (name == "addmm" and params):
            return self._weighted(func, args, kwargs, srcs, "linear")
        if name in _NORM:
            return self._weighted(func, args, kwargs, srcs, _NORM[name], fast=True)
        if name == "multi_head_attention_forward":
            return self._mha(func, args, kwargs, srcs)
        if name == "embedding":
            return self._weighted(func, args, kwargs, srcs, "embedding")
        if name == "scaled_dot_product_attention":
            return self._plain(func, args, kwargs, srcs, "attention")

        if params:  # a parameter used outside a layer: name the node for its role
            if name in _PASS and not (name in _INDEX and _tensor_index(args)):
                out = func(*args, **kwargs)  # still a view of the parameter, no node yet
                pname = self.param_of[id(params[0])]
                for t in _tensors(out):
                    self.param_of[id(t)] = pname
                    self.keep.append(t)
                return out
            if name in _CAT:
                op, role = "cls_token", "weight"
            elif name in _SUM:
                op = "pos_emb" if params[0].dim() - sum(d == 1 for d in params[0].shape) >= 2 else "bias"
                role = "weight" if op == "pos_emb" else "bias"
            elif name in _MUL:
                op, role = "layer_scale", "scale"
            elif name in _INDEX:  # table[index]: a lookup table of relative positions
                op, role = "rel_pos_bias", "weight"
            elif name in _MATMUL:
                op, role = "linear", "weight"
            else:
                op, role = "param", "weight"
            out = func(*args, **kwargs)
            node = self.add_node(op, srcs, name=name)
            self.own(node, params, [role] * len(params))
            self.mark(out, node)
            return out

        unique = set(srcs)
        if name in _DROPOUT:
            out = _same_shape(func, args, kwargs)
            self.mark(out, srcs[0])
            return out
        if name in _PASS or ((name in _SUM or name in _MUL or name in _CAT) and len(unique) < 2):
            out = func(*args, **kwargs)
            self.mark(out, srcs[0])
            return out
        if name in _SUM:
            return self._plain(func, args, kwargs, srcs, "sum")
        if name in _MUL:
            return self._plain(func, args, kwargs, srcs, "mul")
        if name in _CAT:
            return self._plain(func, args, kwargs, srcs, "concat")
        if "max_pool" in name:
            return self._plain(func, args, kwargs, srcs, "max_pool")
        if "avg_pool" in name or name in ("mean", "adaptive_max_pool2d"):
            out = _output(func, args, kwargs)
            glob = name == "mean" or (_is_tensor(out) and out.dim() >= 3 and math.prod(out.shape[2:]) == 1)
            node = self.add_node("glob_avg" if glob else "avg_pool", srcs, name=name)
            self.mark(out, node)
            return out
        if name in _MATMUL:
            return self._plain(func, args, kwargs, srcs, "matmul")
        if name not in self.unknown_ops:
            self.unknown_ops.add(name)
            log.info("op %r is not in the graph vocabulary; it becomes an 'unknown' node", name)
        return self._plain(func, args, kwargs, srcs, "unknown")

    def _plain(self, func, args, kwargs, srcs, op: str):
        out = _output(func, args, kwargs)
        self.mark(out, self.add_node(op, srcs, name=getattr(func, "__name__", op)))
        return out

    def _weighted(self, func, args, kwargs, srcs, op: str, fast: bool = False):
        # Norms keep the input shape: skip their (slow, decomposed) meta kernels.
        out = args[0].detach() if fast and args[0].device.type == "meta" else _output(func, args, kwargs)
        node = self.add_node(op, srcs, name=getattr(func, "__name__", op))
        weight, bias = _weight_bias(func.__name__, args, kwargs)
        if op in ("bn", "ln", "gn", "in"):
            self.own(node, [weight, bias], ["scale", "bias"])
        else:
            self.own(node, [weight, bias], ["weight", "bias"])
        if _is_tensor(weight) and self.nodes[node].shape == (0, 0, 0, 0):  # shared weight
            self.nodes[node].shape = canonical_shape(weight.shape, conv=op.endswith("conv"))
        self.mark(out, node)
        return out

    def _mha(self, func, args, kwargs, srcs):
        a = _bind_mha(args, kwargs)
        plain = a["query"].device.type == "meta" and a["bias_k"] is None and not a["add_zero_attn"]
        out = _mha_shape_only(a, kwargs) if plain else func(*args, **kwargs)
        msa = self.add_node("msa", srcs, name="multi_head_attention_forward")
        self.own(
            msa,
            [a["in_proj_weight"], a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"],
             a["in_proj_bias"], a["bias_k"], a["bias_v"]],
            ["weight", "weight", "weight", "weight", "bias", "bias", "bias"],
        )
        proj = self.add_node("linear", [msa], name="out_proj")
        self.own(proj, [a["out_proj_weight"], a["out_proj_bias"]], ["weight", "bias"])
        self.mark(out, proj)
        return out


def _output(func, args, kwargs) -> Any:
    """``func(*args, **kwargs)``, computed from shapes alone when one of the shortcuts below
    knows the op and its arguments (their meta kernels dominate tracing)."""
    name = func.__name__
    if name in _SUM or name in _MUL or name in _CAT:
        out = _shape_only(name, args, kwargs)
    elif name in _CONV:
        out = _conv_shape_only(name, args, kwargs)
    elif "pool" in name:
        out = _pool_shape_only(name, args, kwargs)
    else:
        out = None
    return func(*args, **kwargs) if out is None else out


def _shape_only(name: str, args, kwargs) -> torch.Tensor | None:
    """Output of a sum, product or concatenation of meta tensors from shapes alone: their
    meta kernels (dtype and stride logic in Python) dominate tracing. None when the call
    is not the plain case, and the real kernel runs instead."""
    if name in _CAT:
        if name == "stack" or not args or not isinstance(args[0], (list, tuple)):
            return None
        ts = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if not ts or any(not _is_tensor(t) or t.device.type != "meta" or t.dim() != ts[0].dim() for t in ts):
            return None
        if ts[0].dim() == 0 or any(t.dtype != ts[0].dtype for t in ts):
            return None
        shape = list(ts[0].shape)
        shape[dim] = sum(t.shape[dim] for t in ts)
        return torch.empty(shape, dtype=ts[0].dtype, device="meta")
    if len(args) < 2 or any(_is_tensor(t) for t in args[2:]) or not all(
        _is_tensor(t) and t.device.type == "meta" and t.is_floating_point() for t in args[:2]
    ):
        return None
    a, b = args[0], args[1]
    # torch.broadcast_shapes is slow Python; equal shapes are the common case.
    shape = a.shape if a.shape == b.shape else torch.broadcast_shapes(a.shape, b.shape)
    if name.endswith("_") and not name.startswith("__") or name.startswith("__i"):  # in place
        return a if shape == a.shape else None
    dtype = a.dtype if a.dtype == b.dtype else torch.promote_types(a.dtype, b.dtype)
    return torch.empty(shape, dtype=dtype, device="meta")


def _pair(x: Any, n: int) -> tuple[int, ...] | None:
    if isinstance(x, int):
        return (x,) * n
    if isinstance(x, (tuple, list)) and len(x) == n and all(isinstance(v, int) for v in x):
        return tuple(x)
    return None


def _window_out(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil: bool) -> int:
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:  # the last window must start inside the input
        out -= 1
    return out


def _conv_shape_only(name: str, args, kwargs) -> torch.Tensor | None:
    """Output of ``conv1d/2d/3d`` on a meta input from shapes alone (their meta kernels are
    the largest cost of tracing a convolutional network). None when not the plain case
    (transposed, string or odd padding, not meta), and the real kernel runs instead."""
    if name not in ("conv1d", "conv2d", "conv3d"):
        return None
    x, w = args[0], _arg(args, kwargs, 1, "weight")
    n = int(name[4])
    if not (_is_tensor(x) and _is_tensor(w) and x.device.type == "meta" and x.dim() in (n + 1, n + 2)):
        return None
    stride, dilation = (_pair(_arg(args, kwargs, i, key, 1), n) for i, key in ((3, "stride"), (5, "dilation")))
    pad = _pair(_arg(args, kwargs, 4, "padding", 0), n)
    if stride is None or dilation is None or pad is None or w.dim() != n + 2:
        return None
    spatial = x.shape[-n:]
    out = [_window_out(spatial[i], w.shape[2 + i], stride[i], pad[i], dilation[i], False) for i in range(n)]
    if min(out) < 1 or x.shape[-n - 1] != w.shape[1] * _arg(args, kwargs, 6, "groups", 1):
        return None  # let the kernel raise its own error
    return torch.empty((*x.shape[:-n - 1], w.shape[0], *out), dtype=x.dtype, device="meta")


def _pool_shape_only(name: str, args, kwargs) -> torch.Tensor | None:
    """Output of a 2-D max/avg pool or an adaptive average pool on a meta input, from
    shapes alone; None when not the plain case (then the real kernel runs)."""
    x = args[0] if args else kwargs.get("input")
    if not (_is_tensor(x) and x.device.type == "meta" and x.dim() in (3, 4)):
        return None
    if name == "adaptive_avg_pool2d":
        size = _pair(_arg(args, kwargs, 1, "output_size"), 2)
        return None if size is None else torch.empty((*x.shape[:-2], *size), dtype=x.dtype, device="meta")
    if name not in ("max_pool2d", "avg_pool2d"):
        return None
    if _arg(args, kwargs, 6, "return_indices" if name == "max_pool2d" else "divisor_override"):
        return None
    kernel = _pair(_arg(args, kwargs, 1, "kernel_size"), 2)
    stride = _pair(_arg(args, kwargs, 2, "stride", None) or kernel, 2)
    pad = _pair(_arg(args, kwargs, 3, "padding", 0), 2)
    if name == "max_pool2d":
        dilation, ceil = _pair(_arg(args, kwargs, 4, "dilation", 1), 2), _arg(args, kwargs, 5, "ceil_mode", False)
    else:
        dilation, ceil = (1, 1), _arg(args, kwargs, 4, "ceil_mode", False)
    if kernel is None or stride is None or pad is None or dilation is None or not isinstance(ceil, bool):
        return None
    out = [_window_out(x.shape[-2 + i], kernel[i], stride[i], pad[i], dilation[i], ceil) for i in range(2)]
    if min(out) < 1 or any(2 * p > k for p, k in zip(pad, kernel)):
        return None
    return torch.empty((*x.shape[:-2], *out), dtype=x.dtype, device="meta")


def _mha_shape_only(a: dict[str, Any], kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Outputs of ``F.multi_head_attention_forward`` on meta tensors, from shapes alone:
    attention output of the query's shape, weights ``(B, L, S)`` averaged over heads or
    ``(B, H, L, S)`` (unbatched: without B), or None when not requested."""
    q, k = a["query"], a["key"]
    out = torch.empty(q.shape, dtype=q.dtype, device="meta")
    if a["need_weights"] is False:
        return out, None
    length, source = q.shape[0], k.shape[0]
    batch = (q.shape[1],) if q.dim() == 3 else ()
    heads = () if kwargs.get("average_attn_weights", True) else (a["num_heads"],)
    return out, torch.empty((*batch, *heads, length, source), dtype=q.dtype, device="meta")


def _tensor_index(args) -> bool:
    """Advanced indexing with an index tensor (``table[index]``), not slicing."""
    return bool(_tensors(args[1:]))


def _same_shape(func, args, kwargs):
    """Run a shape-preserving op (activation, dropout) without its meta kernel."""
    x = args[0]
    if x.device.type == "meta" and func.__name__ not in ("softmax", "log_softmax", "_softmax"):
        return x.detach()
    return func(*args, **kwargs)


def _arg(args, kwargs, i: int, key: str, default=None):
    return args[i] if len(args) > i else kwargs.get(key, default)


# Positions of (dilation, groups) in each convolution's signature: the transposed ones put
# output_padding before groups, and torch.convolution has transposed/output_padding between.
_CONV_DIL_GROUPS: dict[str, tuple[int, int]] = {
    **dict.fromkeys(("conv1d", "conv2d", "conv3d"), (5, 6)),  # (x, w, b, stride, padding, dilation, groups)
    # (x, w, b, stride, padding, output_padding, groups, dilation)
    **dict.fromkeys(("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"), (7, 6)),
    # (x, w, b, stride, padding, dilation, transposed, output_padding, groups)
    "convolution": (5, 8),
}


def _conv_op(name: str, args, kwargs) -> str:
    """Op type of a call to the convolution `name` (one of `_CONV`): grouped, dilated or plain."""
    weight = _arg(args, kwargs, 1, "weight")
    dil_at, groups_at = _CONV_DIL_GROUPS[name]
    groups = _arg(args, kwargs, groups_at, "groups", 1)
    dilation = _arg(args, kwargs, dil_at, "dilation", 1)
    if isinstance(groups, int) and groups > 1:
        return "dw_conv"
    dil = dilation if isinstance(dilation, (tuple, list)) else (dilation,)
    if any(isinstance(d, int) and d > 1 for d in dil) and weight is not None and weight.shape[-1] > 1:
        return "dil_conv"
    return "conv"


def _weight_bias(name: str, args, kwargs):
    if name in ("batch_norm", "instance_norm"):  # (input, running_mean, running_var, weight, bias, ...)
        return _arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 4, "bias")
    if name in ("layer_norm", "group_norm"):  # (input, shape/groups, weight, bias, eps)
        return _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    if name == "rms_norm":
        return _arg(args, kwargs, 2, "weight"), None
    if name == "embedding":  # (input, weight, ...)
        return _arg(args, kwargs, 1, "weight"), None
    if name == "addmm":  # (bias, input, weight)
        return args[2], args[0]
    return _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")


_MHA_ARGS = (
    "query key value embed_dim_to_check num_heads in_proj_weight in_proj_bias bias_k bias_v "
    "add_zero_attn dropout_p out_proj_weight out_proj_bias training key_padding_mask need_weights "
    "attn_mask use_separate_proj_weight q_proj_weight k_proj_weight v_proj_weight"
).split()


def _bind_mha(args, kwargs) -> dict[str, Any]:
    bound = dict(zip(_MHA_ARGS, args))
    bound.update(kwargs)
    return {k: bound.get(k) for k in _MHA_ARGS}


# --------------------------------------------------------------------------- subgraphs


@dataclass(frozen=True)
class _Recorded:
    """A block's traced nodes. Node preds: -1 is the block's input, k >= 0 its k-th node;
    parameter names are relative to the block."""

    nodes: tuple[_Node, ...]
    input_act: str  # activation the block applies first to its input ("none" if none)
    out: int  # node producing the output (-1: the input itself)
    out_shape: tuple[int, ...]
    out_dtype: torch.dtype


class SubgraphCache:
    """Graphs of recurring blocks, traced once and replayed into later graphs.

    Tracing runs every op of a forward through Python. Model families built from a limited
    set of blocks (DeepNets networks: every op, cell preprocessing, stem and head is one of
    a few thousand) are traced much faster by replaying each block's recorded nodes, with
    the block's parameter names and the producer of its input filled in. The graph is the
    same node for node as without the cache.

    Args:
        key: a submodule's block identity (hashable), or None to trace it as usual.
            Submodules with equal keys must compute the same graph, with the same
            parameter names relative to themselves, from inputs of equal shape (the input
            shape, dtype and training mode are added to the key here), own their
            parameters, and be called as a whole (key containers whose children the model
            calls one by one, and the graph is traced without the cache). Called once per
            submodule per graph: keep it cheap.
        max_entries: blocks kept, least recently used evicted first.

    Blocks that read graph tensors other than their single input, or return anything but
    one tensor, are traced as usual. A copy sent to another process starts empty.
    """

    def __init__(self, key: Callable[[nn.Module], Hashable | None], max_entries: int = 8192) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be positive, got {max_entries}")
        self.key = key
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Recorded | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_entries": OrderedDict()}

    def blocks(self, model: nn.Module) -> list[tuple[nn.Module, str, Hashable]]:
        """The outermost keyed submodules of ``model`` (not the model itself) as
        ``(module, path, key)``; shared submodules (two paths) are left out."""
        found: dict[int, tuple[nn.Module, str, Hashable]] = {}
        seen: set[int] = set()

        def visit(module: nn.Module, prefix: str) -> None:
            for name, child in module._modules.items():
                if child is None:
                    continue
                if id(child) in seen:  # shared: its parameters have another name; trace it
                    found.pop(id(child), None)
                    continue
                seen.add(id(child))
                key = self.key(child)
                if key is None:
                    visit(child, f"{prefix}{name}.")
                else:
                    found[id(child)] = (child, prefix + name, key)

        visit(model, "")
        return list(found.values())

    @contextlib.contextmanager
    def replaying(self, blocks: list[tuple[nn.Module, str, Hashable]], tracer: _Tracer) -> Iterator[set[int]]:
        """Route the forward of ``blocks`` (from `blocks`) through the cache while
        ``tracer`` traces; their parameters are swapped for meta tensors only when a block
        has to be traced. Yields the ids of the blocks called so far."""
        called: set[int] = set()
        try:
            for module, path, key in blocks:
                module.__dict__["forward"] = functools.partial(self._forward, tracer, called, module, path, key)
            yield called
        finally:
            for module, _, _ in blocks:
                module.__dict__.pop("forward", None)

    def _forward(
        self, tracer: _Tracer, called: set[int], module: nn.Module, path: str, key: Hashable, *args: Any, **kwargs: Any
    ) -> Any:
        called.add(id(module))
        x = args[0] if len(args) == 1 and not kwargs else None
        if not (_is_tensor(x) and id(x) in tracer.node_of):
            return _traced_block(tracer, module, path, *args, **kwargs)
        full_key = (key, tuple(x.shape), x.dtype, module.training)
        if full_key in self._entries:
            rec = self._entries[full_key]
            self._entries.move_to_end(full_key)
        else:
            rec = _record(tracer, module, path, x)
            self._entries[full_key] = rec
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        if rec is None:
            return _traced_block(tracer, module, path, x)
        return _replay(tracer, rec, path, x)


def _record(tracer: _Tracer, module: nn.Module, path: str, x: torch.Tensor) -> _Recorded | None:
    """Trace ``module`` on a stand-in for ``x`` inside ``tracer``, then take its nodes back
    out as a `_Recorded` (None if the block cannot be replayed)."""
    start, kept = len(tracer.nodes), len(tracer.keep)
    tracer.add_node("input", name="input")
    stand_in = torch.empty_like(x)
    tracer.mark(stand_in, start)
    out = _traced_block(tracer, module, path, stand_in)
    nodes, input_act = tracer.nodes[start + 1 :], tracer.nodes[start].act
    out_node = tracer.node_of.get(id(out)) if _is_tensor(out) else None
    # Undo: the caller replays the recording (or runs the forward again) in their place.
    del tracer.nodes[start:]
    for t in tracer.keep[kept:]:  # still kept alive, so their ids are not reused
        tracer.node_of.pop(id(t), None)
    prefix = path + "."
    names = [n for node in nodes for n, _ in node.params]
    tracer.owned.difference_update(names)
    if out_node is None or out_node < start or not all(n.startswith(prefix) for n in names):
        return None
    if any(q < start for node in nodes for q in node.preds):
        return None  # reads graph tensors other than its input
    local = tuple(
        _Node(node.op, node.shape, node.act, [(n[len(prefix):], r) for n, r in node.params],
              [q - start - 1 for q in node.preds], node.name)
        for node in nodes
    )
    return _Recorded(local, input_act, out_node - start - 1, tuple(out.shape), out.dtype)


def _traced_block(tracer: _Tracer, module: nn.Module, path: str, *args: Any, **kwargs: Any) -> Any:
    """Run a block's own forward under ``tracer``, its tensors swapped for meta ones."""
    names = {id(p): f"{path}.{n}" for n, p in module.named_parameters()}
    with _meta_tensors(module) as meta_of:
        tracer.param_of.update((id(meta_of[i]), n) for i, n in names.items())
        tracer.keep.extend(meta_of.values())  # alive, so that no other tensor takes their ids
        return type(module).forward(module, *args, **kwargs)


def _replay(tracer: _Tracer, rec: _Recorded, path: str, x: torch.Tensor) -> torch.Tensor:
    u, base = tracer.node_of[id(x)], len(tracer.nodes)
    for node in rec.nodes:
        params = [(f"{path}.{n}", r) for n, r in node.params]
        name = params[0][0].rpartition(".")[0] if params else node.name  # as _Tracer.own names it
        preds = [u if q < 0 else base + q for q in node.preds]
        tracer.nodes.append(_Node(node.op, node.shape, node.act, params, preds, name))
        tracer.owned.update(n for n, _ in params)
    if tracer.nodes[u].act == "none":
        tracer.nodes[u].act = rec.input_act
    out = torch.empty(rec.out_shape, dtype=rec.out_dtype, device="meta")
    tracer.mark(out, u if rec.out < 0 else base + rec.out)
    return out


# --------------------------------------------------------------------------- building


def build_graph(
    model: nn.Module,
    input_shape: Sequence[int] = (3, 224, 224),
    *,
    s_max: int = 50,
    batch_size: int = 2,
    subgraphs: SubgraphCache | None = None,
) -> Graph:
    """Build the computational graph of `model`.

    Args:
        model: any `nn.Module` with parameters, on any device (including ``meta``).
        input_shape: one example input without the batch dimension, ``(C, H, W)`` for
            image models. The default suits every torchvision classification model;
            models adapted to CIFAR take ``(3, 32, 32)``.
        s_max: longest shortest-path length that still gets a virtual edge (GHN-2: 50);
            below 2 disables virtual edges.
        batch_size: batch of the traced forward (2, so train-mode batch norm accepts it).
        subgraphs: replays the graphs of recurring blocks instead of tracing them again
            (see `SubgraphCache`); the graph is the same.

    The model is traced in training mode, so auxiliary heads that only run in training
    (Inception-v3, GoogLeNet) are covered; if that forward fails, in eval mode (parameters
    it leaves unused get isolated nodes, with a warning). The model's modes are restored.

    Raises:
        TypeError: `model` is not an `nn.Module`.
        GraphError: the model has no parameters, or its forward fails for `input_shape`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"build_graph expects a torch.nn.Module, got {type(model).__name__}")
    named = dict(model.named_parameters())
    if not named:
        raise GraphError(f"{type(model).__name__} has no parameters: there is nothing to predict")

    tracer = _trace(model, tuple(int(s) for s in input_shape), batch_size, named, subgraphs)
    nodes = tracer.nodes
    missing = [n for n in named if n not in tracer.owned]
    if missing:
        log.warning(
            "%s: %d parameter(s) are not used by the forward for input %s and get isolated nodes: %s",
            type(model).__name__, len(missing), tuple(input_shape), ", ".join(missing[:5]),
        )
        for n in missing:
            op = _module_op(model, n)
            if named[n].dim() == 1 and n.endswith("bias"):
                role = "bias"
            else:
                role = "scale" if op in ("bn", "ln", "gn") else "weight"
            shape = canonical_shape(named[n].shape, conv=op == "conv")
            nodes.append(_Node(op, shape=shape, params=[(n, role)], name=n.rpartition(".")[0]))
    return _to_data(nodes, named, tracer.outputs, s_max)


def _module_op(model: nn.Module, pname: str) -> str:
    module = model.get_submodule(pname.rpartition(".")[0])
    for cls, op in _MODULE_OP:
        if isinstance(module, cls):
            return op
    return "param"


def _trace(
    model: nn.Module, input_shape: tuple[int, ...], batch_size: int, named: dict, subgraphs: SubgraphCache | None
) -> _Tracer:
    training = {m: m.training for m in model.modules()}
    try:
        if not all(training.values()):  # each flag set is an nn.Module.__setattr__
            model.train()
        try:
            return _run(model, input_shape, batch_size, named, "meta", subgraphs)
        except GraphError:
            raise
        except Exception as train_err:
            # Training-only branches may need a larger input (Inception-v3's auxiliary
            # head at 224 px): the eval-mode forward still covers the main network.
            model.eval()
            log.info("train-mode trace of %s failed (%s); tracing in eval mode", type(model).__name__, train_err)
        try:
            return _run(model, input_shape, batch_size, named, "meta", subgraphs)
        except GraphError:
            raise
        except (NotImplementedError, RuntimeError) as meta_err:
            # Data-dependent control flow cannot run on meta tensors: fall back to one real
            # forward with the model's own weights (no copy), unless those are meta too.
            if any(p.device.type == "meta" for p in named.values()):
                raise GraphError(_forward_failed(model, input_shape, meta_err)) from meta_err
            log.info("meta trace of %s failed (%s); tracing with real tensors", type(model).__name__, meta_err)
            try:
                return _run(model, input_shape, batch_size, named, None, None)
            except Exception as err:
                raise GraphError(_forward_failed(model, input_shape, err)) from err
        except Exception as err:
            raise GraphError(_forward_failed(model, input_shape, err)) from err
    finally:
        for m, flag in training.items():
            if m.training != flag:
                m.training = flag


def _forward_failed(model: nn.Module, input_shape: tuple[int, ...], err: Exception) -> str:
    return (
        f"the forward of {type(model).__name__} failed for input_shape={input_shape} "
        f"(without batch dimension): {type(err).__name__}: {err}. "
        "Pass the input shape the model expects, e.g. input_shape=(3, 32, 32) for CIFAR models."
    )


def _run(model, input_shape, batch_size, named, device: str | None, subgraphs: SubgraphCache | None) -> _Tracer:
    """Trace one forward. device="meta": fresh meta tensors stand in for every parameter
    and buffer; device=None: the model's own tensors are used."""
    if device == "meta":
        x = torch.empty(batch_size, *input_shape, device="meta")
        names = {id(p): k for k, p in named.items()}
        blocks = subgraphs.blocks(model) if subgraphs is not None else []
        with _meta_tensors(model, skip=[b for b, _, _ in blocks]) as meta_of:
            tracer = _Tracer({id(meta_of[i]): k for i, k in names.items() if i in meta_of})
            with contextlib.nullcontext(set()) if subgraphs is None else subgraphs.replaying(blocks, tracer) as called:
                out = _traced_forward(model, x, tracer)
        if any(id(b) not in called and any(True for _ in b.parameters()) for b, _, _ in blocks):
            # A keyed container whose children the model calls one by one (its tensors
            # were never swapped for meta ones): trace the model without the cache.
            log.debug("%s: a keyed submodule was not called as a whole; traced without the cache", type(model).__name__)
            return _run(model, input_shape, batch_size, named, device, None)
    else:
        p0 = next(iter(named.values()))
        x = torch.zeros(batch_size, *input_shape, device=p0.device, dtype=p0.dtype)
        tracer = _Tracer({id(t): k for k, t in named.items()})
        out = _traced_forward(model, x, tracer)
    tracer.outputs = sorted({tracer.node_of[id(t)] for t in _tensors(out) if id(t) in tracer.node_of})
    if not tracer.outputs:
        raise GraphError(f"the output of {type(model).__name__} does not depend on its input")
    return tracer


def _traced_forward(model: nn.Module, x: torch.Tensor, tracer: _Tracer) -> Any:
    tracer.add_node("input", name="input")
    tracer.mark(x, 0)
    with torch.no_grad(), tracer:
        return model(x)


@contextlib.contextmanager
def _meta_tensors(model: nn.Module, skip: Sequence[nn.Module] = ()) -> Iterator[dict[int, torch.Tensor]]:
    """Swap every parameter and buffer of ``model`` (except inside the ``skip`` submodules)
    for a meta tensor of its shape, and restore them on exit. Yields ``id(original) ->
    meta tensor`` (a tensor shared by two modules gets one meta tensor). What
    ``torch.func.functional_call`` does, but a dict per module instead of a ``setattr``
    per tensor, which was a fifth of tracing time."""
    meta_of: dict[int, torch.Tensor] = {}

    def meta(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        m = meta_of.get(id(t))
        if m is None:
            m = meta_of[id(t)] = torch.empty_like(t, device="meta")
        return m

    # Through __dict__: nn.Module.__setattr__ would cost more than the swap itself.
    modules, stack, seen = [], [model], {id(m) for m in skip}
    while stack:
        m = stack.pop()
        if id(m) not in seen:
            seen.add(id(m))
            modules.append(m)
            stack.extend(c for c in m._modules.values() if c is not None)
    saved = [(m.__dict__, m._parameters, m._buffers) for m in modules]
    try:
        for state, params, buffers in saved:
            state["_parameters"] = {k: meta(p) for k, p in params.items()}
            state["_buffers"] = {k: meta(b) for k, b in buffers.items()}
        yield meta_of
    finally:
        for state, params, buffers in saved:
            state["_parameters"], state["_buffers"] = params, buffers


def _to_data(nodes: list[_Node], named: dict[str, torch.Tensor], outputs: list[int], s_max: int) -> Graph:
    n = len(nodes)
    src = [u for v, node in enumerate(nodes) for u in node.preds]
    dst = [v for v, node in enumerate(nodes) for _ in node.preds]
    preds = [node.preds for node in nodes]
    succs: list[list[int]] = [[] for _ in range(n)]
    for u, v in zip(src, dst):
        succs[u].append(v)

    level = [0] * n  # Python lists: numpy's per-call overhead dominates for a few preds
    for v in range(n):  # node order is topological
        if preds[v]:
            level[v] = max(level[u] for u in preds[v]) + 1
    rlevel = [0] * n
    for v in range(n - 1, -1, -1):
        if succs[v]:
            rlevel[v] = max(rlevel[w] for w in succs[v]) + 1

    param_node, param_role, param_shape, param_names = [], [], [], []
    for v, node in enumerate(nodes):
        conv = node.op in ("conv", "dw_conv", "dil_conv")
        for name, role in node.params:
            param_node.append(v)
            param_role.append(ROLE_ID[role])
            param_shape.append(canonical_shape(named[name].shape, conv=conv and role == "weight"))
            param_names.append(name)

    ve_index, ve_dist = virtual_edges(preds, s_max)
    return Graph(
        op=torch.tensor([OP_ID[node.op] for node in nodes], dtype=torch.long),
        act=torch.tensor([ACT_ID[node.act] for node in nodes], dtype=torch.long),
        shape=torch.tensor([node.shape for node in nodes], dtype=torch.long),
        level=torch.tensor(level, dtype=torch.long),
        rlevel=torch.tensor(rlevel, dtype=torch.long),
        relu_after=torch.tensor(_relu_after(nodes, succs), dtype=torch.bool),
        head=torch.tensor(_heads(nodes, outputs), dtype=torch.bool),
        edge_index=torch.tensor([src, dst], dtype=torch.long).view(2, -1),
        ve_index=ve_index,
        ve_dist=ve_dist,
        param_node_index=torch.tensor(param_node, dtype=torch.long),
        param_role=torch.tensor(param_role, dtype=torch.long),
        param_shape=torch.tensor(param_shape, dtype=torch.long).view(-1, 4),
        param_names=param_names,
        param_dims=[tuple(named[n].shape) for n in param_names],
        node_names=[node.name for node in nodes],
        s_max=s_max,
        num_nodes=n,
    )


def _relu_after(nodes: list[_Node], succs: list[list[int]]) -> list[bool]:
    out = []
    for v, node in enumerate(nodes):
        relu = _act_relu(node)
        if not relu and len(succs[v]) == 1:
            nxt = nodes[succs[v][0]]
            relu = nxt.op in ("bn", "ln", "gn", "in") and _act_relu(nxt)
        out.append(relu)
    return out


def _act_relu(node: _Node) -> bool:
    return node.act in RELU_LIKE


def _heads(nodes: list[_Node], outputs: list[int]) -> list[bool]:
    """Parameterised nodes reached from an output through parameter-free nodes only."""
    head = [False] * len(nodes)
    stack, seen = list(outputs), set(outputs)
    while stack:
        v = stack.pop()
        if nodes[v].params and nodes[v].op in ("linear", "conv"):
            head[v] = True
            continue
        for u in nodes[v].preds:
            if u not in seen:
                seen.add(u)
                stack.append(u)
    return head


def virtual_edges(preds: Sequence[Sequence[int]], s_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shortest-path virtual edges of a DAG whose node order is topological.

    Args:
        preds: ``preds[v]`` lists the direct predecessors of node ``v`` (all ``< v``).
        s_max: largest distance kept.
    Returns:
        ve_index [2, V] long (u -> v) and ve_dist [V] uint8 with ``1 < dist <= s_max``,
        sorted by (v, u).

    Distances are found by dynamic programming in topological order,
    ``d(u, v) = 1 + min_{p in preds(v)} d(u, p)``, one vectorised row per node.
    """
    n = len(preds)
    if s_max < 2 or n < 3:
        return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.uint8)
    if s_max > 254:
        raise ValueError(f"s_max must be at most 254, got {s_max}")
    inf = np.uint8(255)
    dist = np.full((n, n), inf, dtype=np.uint8)  # dist[v, u]: from u to v
    for v in range(n):
        p = preds[v]
        if not p:
            continue
        row = dist[p].min(axis=0) if len(p) > 1 else dist[p[0]].copy()
        np.add(row, 1, out=row, where=row < inf)
        row[p] = 1
        dist[v] = row
    v_idx, u_idx = np.nonzero((dist > 1) & (dist <= s_max))
    ve_index = torch.from_numpy(np.stack([u_idx, v_idx]).astype(np.int64))
    return ve_index, torch.from_numpy(dist[v_idx, u_idx])


# --------------------------------------------------------------------------- drawing


def draw_graph(graph: Graph, path: str | Path, title: str | None = None) -> Path:
    """Draw `graph` to a PNG file: nodes in columns by level, coloured by op type."""
    # The object API draws off-screen without pyplot's global state, so the caller's backend
    # (a notebook's, say) is left alone.
    import matplotlib
    from matplotlib.figure import Figure

    g = graph.to_networkx()
    for v in g.nodes:
        g.nodes[v]["layer"] = g.nodes[v]["level"]
    pos = nx.multipartite_layout(g, subset_key="layer")
    ops = sorted({g.nodes[v]["op"] for v in g.nodes}, key=OP_ID.get)
    tab20 = matplotlib.colormaps["tab20"]
    color = {op: tab20((2 * i) % 20 + (i // 10) % 2) for i, op in enumerate(OPS)}  # dark shades first
    width = min(4 + 0.12 * (int(graph.level.max()) + 1), 80)
    fig = Figure(figsize=(width, 8))
    ax = fig.add_subplot()
    nx.draw_networkx_edges(g, pos, ax=ax, alpha=0.3, arrowsize=5, node_size=40)
    for op in ops:
        vs = [v for v in g.nodes if g.nodes[v]["op"] == op]
        nx.draw_networkx_nodes(g, pos, nodelist=vs, node_color=[color[op]], node_size=40, ax=ax, label=op)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title(title or f"{graph.num_nodes} nodes, {len(graph.param_names)} parameter tensors")
    ax.axis("off")
    path = Path(path)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
