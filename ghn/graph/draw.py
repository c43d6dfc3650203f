"""Drawing a `Graph` to a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import networkx as nx

from ghn.graph.vocab import OP_ID, OPS

if TYPE_CHECKING:
    from ghn.graph.data import Graph


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
