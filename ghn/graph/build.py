"""`build_graph`: trace a model (falling back from train to eval mode, and from meta to
real tensors) and turn the recorded nodes into a `Graph` with levels, heads and virtual
edges."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ghn.graph.data import Graph
from ghn.graph.ops import _tensors
from ghn.graph.subgraphs import SubgraphCache
from ghn.graph.tracer import _meta_tensors, _Node, _Tracer
from ghn.graph.vocab import ACT_ID, OP_ID, RELU_LIKE, ROLE_ID, canonical_shape

log = logging.getLogger(__name__)


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


def build_graph(
    model: nn.Module,
    input_shape: Sequence[int] = (3, 224, 224),
    *,
    input_dtype: torch.dtype = torch.float32,
    s_max: int = 50,
    batch_size: int = 2,
    subgraphs: SubgraphCache | None = None,
) -> Graph:
    """Build the computational graph of `model`.

    Args:
        model: any `nn.Module` with parameters, on any device (including ``meta``).
        input_shape: one example input without the batch dimension, ``(C, H, W)`` for
            image models. The default suits every torchvision classification model;
            models adapted to CIFAR take ``(3, 32, 32)``, a language model ``(seq_len,)``.
        input_dtype: dtype of that input: ``torch.long`` for models that start with an
            ``nn.Embedding`` of token ids (the traced input holds id 0).
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

    tracer = _trace(model, tuple(int(s) for s in input_shape), input_dtype, batch_size, named, subgraphs)
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
    model: nn.Module,
    input_shape: tuple[int, ...],
    input_dtype: torch.dtype,
    batch_size: int,
    named: dict,
    subgraphs: SubgraphCache | None,
) -> _Tracer:
    training = {m: m.training for m in model.modules()}
    try:
        if not all(training.values()):  # each flag set is an nn.Module.__setattr__
            model.train()
        try:
            return _run(model, input_shape, input_dtype, batch_size, named, "meta", subgraphs)
        except GraphError:
            raise
        except Exception as train_err:
            # Training-only branches may need a larger input (Inception-v3's auxiliary
            # head at 224 px): the eval-mode forward still covers the main network.
            model.eval()
            log.info("train-mode trace of %s failed (%s); tracing in eval mode", type(model).__name__, train_err)
        try:
            return _run(model, input_shape, input_dtype, batch_size, named, "meta", subgraphs)
        except GraphError:
            raise
        except (NotImplementedError, RuntimeError) as meta_err:
            # Data-dependent control flow cannot run on meta tensors: fall back to one real
            # forward with the model's own weights (no copy), unless those are meta too.
            if any(p.device.type == "meta" for p in named.values()):
                raise GraphError(_forward_failed(model, input_shape, input_dtype, meta_err)) from meta_err
            log.info("meta trace of %s failed (%s); tracing with real tensors", type(model).__name__, meta_err)
            try:
                return _run(model, input_shape, input_dtype, batch_size, named, None, None)
            except Exception as err:
                raise GraphError(_forward_failed(model, input_shape, input_dtype, err)) from err
        except Exception as err:
            raise GraphError(_forward_failed(model, input_shape, input_dtype, err)) from err
    finally:
        for m, flag in training.items():
            if m.training != flag:
                m.training = flag


def _forward_failed(model: nn.Module, input_shape: tuple[int, ...], input_dtype: torch.dtype, err: Exception) -> str:
    return (
        f"the forward of {type(model).__name__} failed for input_shape={input_shape} "
        f"(without batch dimension) and input_dtype={input_dtype}: {type(err).__name__}: {err}. "
        "Pass the input the model expects, e.g. input_shape=(3, 32, 32) for CIFAR models, "
        "or input_shape=(seq_len,) and input_dtype=torch.long for models that take token ids."
    )


def _run(
    model, input_shape, input_dtype, batch_size, named, device: str | None, subgraphs: SubgraphCache | None
) -> _Tracer:
    """Trace one forward. device="meta": fresh meta tensors stand in for every parameter
    and buffer; device=None: the model's own tensors are used."""
    if device == "meta":
        x = torch.empty(batch_size, *input_shape, device="meta", dtype=input_dtype)
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
            return _run(model, input_shape, input_dtype, batch_size, named, device, None)
    else:
        p0 = next(iter(named.values()))
        # Float inputs take the model's dtype (a bfloat16 model gets bfloat16 images).
        dtype = p0.dtype if input_dtype.is_floating_point and p0.dtype.is_floating_point else input_dtype
        x = torch.zeros(batch_size, *input_shape, device=p0.device, dtype=dtype)
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
