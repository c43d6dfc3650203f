"""`_Tracer`: a `TorchFunctionMode` recording torch function calls on meta tensors as
graph nodes, and `_meta_tensors`, which swaps a model's tensors for meta ones."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ghn.graph.ops import (
    _ACT_OF, _CAT, _CONST, _CONV, _DROPOUT, _INDEX, _MATMUL, _MUL, _NORM, _PASS, _SUM, _bind_mha,
    _conv_op, _is_tensor, _tensor_index, _tensors, _weight_bias,
)
from ghn.graph.shapes import _mha_shape_only, _output, _same_shape
from ghn.graph.vocab import canonical_shape

log = logging.getLogger(__name__)


@dataclass
class _Node:
    op: str
    shape: tuple[int, int, int, int] = (0, 0, 0, 0)
    act: str = "none"
    params: list[tuple[str, str]] = field(default_factory=list)  # (parameter name, role)
    preds: list[int] = field(default_factory=list)
    name: str = ""


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
