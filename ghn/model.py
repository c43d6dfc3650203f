"""The graph hypernetwork: graph -> node states -> every parameter tensor of the model.

    GHN(config)(graphs)  -> list of {parameter name: tensor} per graph, keeping autograd
    GHN(config)(model)   -> the same model with every trainable parameter predicted
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ghn.config import GHNConfig
from ghn.decoder import HeadDecoder, VectorDecoder, WeightDecoder, normalise_vectors, normalise_weights, tile, tile_into
from ghn.encoder import NodeEncoder
from ghn.gatedgnn import GatedGNN, Schedule, mlp
from ghn.graph import ROLES, Graph, build_graph
from ghn.pyg import Batch

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from ghn.hub import Metadata

Graphs = Graph | Batch | Sequence[Graph]


@dataclass
class _Params:
    """Flat per-parameter view of one graph or a batch of graphs."""

    names: list[str]
    dims: list[tuple[int, ...]]
    graph: list[int]  # graph index of each parameter
    num_graphs: int


def _as_batch(graphs: Graphs) -> tuple[Graph | Batch, _Params]:
    if isinstance(graphs, Batch):
        batch = graphs
    elif isinstance(graphs, Graph):
        return graphs, _Params(list(graphs.param_names), list(graphs.param_dims), [0] * len(graphs.param_names), 1)
    else:
        batch = Batch.from_data_list(list(graphs))
    names = [n for names in batch.param_names for n in names]
    dims = [d for dims in batch.param_dims for d in dims]
    graph = [g for g, names in enumerate(batch.param_names) for _ in names]
    return batch, _Params(names, dims, graph, batch.num_graphs)


class GHN(nn.Module):
    """Graph hypernetwork (GHN-2 by default; GHN-1 and the MLP baseline by config).

    Args:
        config: a `GHNConfig`; keyword arguments override its fields.
        decode_budget: largest decoder output (elements) computed at once; bounds memory
            on huge models.
    """

    def __init__(self, config: GHNConfig | None = None, decode_budget: int = 2**23, **overrides: Any):
        super().__init__()
        if overrides:
            config = GHNConfig.from_dict({**(config or GHNConfig()).to_dict(), **overrides})
        self.config = c = config or GHNConfig()
        self.decode_budget = decode_budget
        self.encoder = NodeEncoder(c.hid)
        if c.message_passing == "gatedgnn":
            self.gnn = GatedGNN(c.hid, virtual_edges=c.virtual_edges)
        else:
            self.node_mlp = mlp(c.hid, 2 * c.hid, c.hid)
        self.norm = nn.LayerNorm(c.hid) if c.layernorm else nn.Identity()
        self.weight_decoder = WeightDecoder(c.hid, c.max_shape, c.dec_hid)
        self.vector_decoder = VectorDecoder(c.hid, c.max_shape[0], len(ROLES))
        self.head_decoder = HeadDecoder(c.hid, c.num_classes, c.max_shape[1])

    # -- graphs
    def graph(
        self, model: nn.Module, input_shape: Sequence[int] | None = None, input_dtype: torch.dtype = torch.float32
    ) -> Graph:
        """The graph of `model` as this meta-model reads it (input as in `build_graph`)."""
        s_max = self.config.s_max if self.config.virtual_edges else 0
        return build_graph(model, input_shape or self.config.input_shape, input_dtype=input_dtype, s_max=s_max)

    # -- the meta-model
    def node_states(self, g: Graph | Batch) -> torch.Tensor:
        """[n, hid] final node states of a graph or batch of graphs."""
        p = next(self.parameters())
        h = self.encoder(g.op.to(p.device), g.act.to(p.device), g.shape.to(p.device)).to(p.dtype)
        if self.config.message_passing == "gatedgnn":
            ve = (g.ve_index, g.ve_dist) if self.config.virtual_edges else (None, None)
            fwd = Schedule.build(g.level, g.edge_index, *ve).to(p.device, p.dtype)
            bwd = Schedule.build(g.rlevel, g.edge_index, *ve, reverse=True).to(p.device, p.dtype)
            h = self.gnn(h, fwd, bwd)
        else:
            h = self.node_mlp(h)
        return self.norm(h)

    def decode(self, g: Graph | Batch, h: torch.Tensor, skip: set[int] | None = None) -> Iterator[tuple[int, torch.Tensor, list[int]]]:
        """Yield ``(k, block, shape)`` for every parameter ``k`` of the graph(s) (minus `skip`):
        `block` is 4-D, at most ``max_shape`` (classifier: ``num_classes x C_max``), and is
        tiled by the caller to `shape`, the parameter's canonical 4-D shape.
        Parameters sharing a block shape are decoded together, at most `decode_budget`
        elements at a time."""
        c = self.config
        co, ci, kh_max, kw_max = c.max_shape
        shapes = g.param_shape.tolist()
        nodes, head = g.param_node_index.tolist(), g.head.tolist()
        groups: dict[tuple, list[int]] = {}
        for k, ((o, i, kh, kw), v) in enumerate(zip(shapes, nodes)):
            if skip and k in skip:
                continue
            vector = i * kh * kw == 1
            if head[v] and kh * kw == 1:  # classifier: linear or 1x1 conv
                key = ("head_b", min(o, c.num_classes)) if vector else ("head_w", min(o, c.num_classes), min(i, ci))
            elif vector:
                key = ("vec", min(o, co))
            else:
                key = ("w", min(o, co), min(i, ci), min(kh, kh_max), min(kw, kw_max))
            groups.setdefault(key, []).append(k)

        device = h.device
        role_t = g.param_role.to(device)
        fan_in = g.param_shape[:, 1:].prod(1).to(device)
        owner = g.param_node_index.to(device)
        relu = g.relu_after.to(device)[owner]
        for key, ks in groups.items():
            step = max(1, self.decode_budget // math.prod(key[1:]))
            for a in range(0, len(ks), step):
                idx = torch.tensor(ks[a : a + step], device=device)
                hs = h.index_select(0, owner[idx])
                kind = key[0]
                if kind == "w":
                    out = self.weight_decoder(hs, key[1:])
                elif kind == "head_w":
                    out = self.head_decoder.weight(hs)[:, : key[1], : key[2], None, None]
                elif kind == "head_b":
                    out = self.head_decoder.bias(hs)[:, : key[1]]
                else:
                    out = self.vector_decoder(hs, role_t[idx])[:, : key[1]]
                if c.weight_norm:
                    if kind in ("w", "head_w"):
                        out = normalise_weights(out, fan_in[idx], relu[idx])
                    else:
                        out = normalise_vectors(out, role_t[idx])
                if out.dim() == 2:
                    out = out[:, :, None, None, None]
                for k, block in zip(ks[a : a + step], out):
                    yield k, block, shapes[k]

    def forward(self, graphs: Graphs | nn.Module) -> list[dict[str, torch.Tensor]] | nn.Module:
        """Training path: parameters of every graph as tensors that keep the autograd graph,
        ``[{name: tensor of the parameter's real shape}]``, ready for
        ``torch.func.functional_call``. Given an `nn.Module`, predicts it in place (`predict`)."""
        if isinstance(graphs, nn.Module):
            return self.predict(graphs)
        g, params = _as_batch(graphs)
        h = self.node_states(g)
        out: list[dict[str, torch.Tensor]] = [{} for _ in range(params.num_graphs)]
        for k, block, shape in self.decode(g, h):
            out[params.graph[k]][params.names[k]] = tile(block, tuple(shape)).reshape(params.dims[k])
        return out

    @torch.no_grad()
    def predict(
        self, model: nn.Module, input_shape: Sequence[int] | None = None, input_dtype: torch.dtype = torch.float32
    ) -> nn.Module:
        """Overwrite every trainable parameter of `model` with its prediction; returns `model`.

        `input_shape` (default: the config's) and `input_dtype` describe one input, as in
        `build_graph`.

        Frozen parameters (``requires_grad=False``) keep their values. Memory beyond the
        model stays bounded by `decode_budget`: blocks are tiled straight into the tensors
        (through a one-tensor copy for a parameter whose strides forbid the 4-D view).
        """
        g = self.graph(model, input_shape, input_dtype)
        named = dict(model.named_parameters())
        skip = {k for k, n in enumerate(g.param_names) if not named[n].requires_grad}
        h = self.node_states(g)
        for k, block, shape in self.decode(g, h, skip=skip):
            param = named[g.param_names[k]]
            # A view of the parameter when its strides allow (always when contiguous); a copy
            # when they do not (e.g. Conv3d in channels_last_3d), then written back.
            target = param.reshape(shape)
            tile_into(target, block)
            if target.data_ptr() != param.data_ptr():
                param.copy_(target.view(param.shape))
        return model

    # -- checkpoints
    def checkpoint(self) -> dict:
        """``{"config": dict, "state_dict": ...}``: loadable with ``torch.load(weights_only=True)``."""
        return {"config": self.config.to_dict(), "state_dict": self.state_dict()}

    def save_pretrained(
        self, directory: str | os.PathLike, metadata: Metadata | Mapping[str, Any] | None = None
    ) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into `directory` and return it
        (see `ghn.hub.save_pretrained`)."""
        from ghn import hub  # the hub depends on the model, not the other way round

        return hub.save_pretrained(self, directory, metadata)

    def push_to_hub(
        self, repo_id: str, metadata: Metadata | Mapping[str, Any] | None = None, **kwargs: Any
    ) -> CommitInfo:
        """Upload to the model-hub repository `repo_id`; `kwargs` are `ghn.hub.push_to_hub`'s
        keyword options. Returns huggingface_hub's `CommitInfo`."""
        from ghn import hub

        return hub.push_to_hub(self, repo_id, metadata, **kwargs)

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any]) -> GHN:
        """Rebuild a meta-model from `checkpoint()`'s dict (``{"config", "state_dict"}``),
        e.g. ``GHN.from_checkpoint(torch.load(path, weights_only=True))``."""
        model = cls(GHNConfig.from_dict(ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model
