"""Gated graph neural network of GHN-2, traversed level by level.

One forward pass over the nodes in topological order, then one backward pass in reverse
order. At node v: ``m_v = sum_{u->v} MLP(h_u) + sum_{u~>v} MLP_ve(h_u) / s_uv`` (the
second sum over virtual edges) and ``h_v = GRU(m_v, h_v)``. A node's predecessors are all
on lower levels (longest path from a source), so every node of a level, across the whole
meta-batch, is updated in one call: the same function as a node-by-node sweep, with a
Python loop over levels instead of nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Schedule:
    """The order of one traversal, precomputed once per (batched) graph.

    order [n]: node ids sorted by level; inverse [n]: position of each node in `order`;
    bounds: level boundaries in `order` (len = levels + 1);
    rows [E]: message-table row of each edge's source, ``2 * position + is_virtual``;
    dst [E]: position of each edge's target within its level; weight [E, 1]: 1 or 1/s;
    ebounds: boundaries of each level's incoming edges in (rows, dst, weight).
    """

    order: torch.Tensor
    inverse: torch.Tensor
    bounds: list[int]
    rows: torch.Tensor
    dst: torch.Tensor
    weight: torch.Tensor
    ebounds: list[int]

    @classmethod
    def build(
        cls,
        level: torch.Tensor,
        edge_index: torch.Tensor,
        ve_index: torch.Tensor | None = None,
        ve_dist: torch.Tensor | None = None,
        reverse: bool = False,
    ) -> Schedule:
        """level [n]: level of each node for this pass; edge_index [2, E] (u -> v);
        ve_index [2, V], ve_dist [V]: virtual edges (optional). ``reverse`` flips edges."""
        n = level.numel()
        order = torch.argsort(level, stable=True)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n, device=order.device)
        counts = torch.bincount(level, minlength=int(level.max()) + 1 if n else 0)
        bounds = [0] + torch.cumsum(counts, 0).tolist()

        src, dst = edge_index
        virtual = torch.zeros_like(src)
        weight = torch.ones(src.numel(), device=src.device)
        if ve_index is not None and ve_index.numel():
            src = torch.cat([src, ve_index[0]])
            dst = torch.cat([dst, ve_index[1]])
            virtual = torch.cat([virtual, torch.ones_like(ve_index[0])])
            weight = torch.cat([weight, 1.0 / ve_dist.float()])
        if reverse:
            src, dst = dst, src
        dst_level = level[dst]
        by_level = torch.argsort(dst_level, stable=True)
        src, dst, virtual, weight, dst_level = (t[by_level] for t in (src, dst, virtual, weight, dst_level))
        ecounts = torch.bincount(dst_level, minlength=len(bounds) - 1)
        ebounds = [0] + torch.cumsum(ecounts, 0).tolist()
        level_start = torch.tensor(bounds[:-1], dtype=torch.long, device=level.device)
        return cls(
            order=order,
            inverse=inverse,
            bounds=bounds,
            rows=2 * inverse[src] + virtual,
            dst=inverse[dst] - level_start[dst_level],
            weight=weight.unsqueeze(1),
            ebounds=ebounds,
        )

    def to(self, device: torch.device, dtype: torch.dtype) -> Schedule:
        return Schedule(
            self.order.to(device), self.inverse.to(device), self.bounds, self.rows.to(device),
            self.dst.to(device), self.weight.to(device, dtype), self.ebounds,
        )


def mlp(d_in: int, d_hid: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hid), nn.ReLU(), nn.Linear(d_hid, d_out))


class GatedGNN(nn.Module):
    """forward(h [n, d], forward_schedule, backward_schedule) -> [n, d]."""

    def __init__(self, hid: int, virtual_edges: bool = True):
        super().__init__()
        self.msg = mlp(hid, hid, hid)
        self.msg_ve = mlp(hid, hid, hid) if virtual_edges else None
        self.gru = nn.GRUCell(hid, hid)

    def messages(self, x: torch.Tensor) -> torch.Tensor:
        """[k, d] states -> [2k, d] message-table rows: MLP(h) at 2i, MLP_ve(h) at 2i + 1."""
        ve = self.msg_ve(x) if self.msg_ve is not None else torch.zeros_like(x)
        return torch.stack([self.msg(x), ve], 1).flatten(0, 1)

    def propagate(self, h: torch.Tensor, s: Schedule) -> torch.Tensor:
        x = h.index_select(0, s.order)
        out: list[torch.Tensor] = []
        tables: list[torch.Tensor] = []
        for lvl in range(len(s.bounds) - 1):
            a, b = s.bounds[lvl], s.bounds[lvl + 1]
            ea, eb = s.ebounds[lvl], s.ebounds[lvl + 1]
            m = x.new_zeros(b - a, x.shape[1])
            if eb > ea:
                table = torch.cat(tables) if len(tables) > 1 else tables[0]
                msg = table.index_select(0, s.rows[ea:eb]) * s.weight[ea:eb]
                m = m.index_add(0, s.dst[ea:eb], msg)
            new = self.gru(m, x[a:b])
            out.append(new)
            if lvl < len(s.bounds) - 2:
                tables.append(self.messages(new))
        return torch.cat(out).index_select(0, s.inverse)

    def forward(self, h: torch.Tensor, fwd: Schedule, bwd: Schedule) -> torch.Tensor:
        return self.propagate(self.propagate(h, fwd), bwd)
