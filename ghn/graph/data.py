"""`Graph`: a model's computational graph as a PyG data object."""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from ghn.graph.draw import draw_graph
from ghn.graph.vocab import ACTS, OPS
from ghn.pyg import Data


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
