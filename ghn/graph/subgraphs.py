"""`SubgraphCache`: graphs of recurring blocks, traced once and replayed."""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ghn.graph.ops import _is_tensor
from ghn.graph.tracer import _meta_tensors, _Node, _Tracer


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
