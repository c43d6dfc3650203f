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

Modules, in the order data flows: `vocab` (vocabularies, canonical shapes), `ops` (torch
function names and arguments as graph ops), `shapes` (meta outputs from shapes alone),
`tracer` (the recording `TorchFunctionMode`), `subgraphs` (`SubgraphCache`), `build`
(`build_graph`, virtual edges), `data` (`Graph`), `draw`.
"""

from ghn.graph.build import GraphError, build_graph, virtual_edges
from ghn.graph.data import Graph
from ghn.graph.draw import draw_graph
from ghn.graph.subgraphs import SubgraphCache
from ghn.graph.vocab import ACT_ID, ACTS, OP_ID, OPS, RELU_LIKE, ROLE_ID, ROLES, canonical_shape

__all__ = [
    "ACTS", "ACT_ID", "OPS", "OP_ID", "RELU_LIKE", "ROLES", "ROLE_ID", "Graph", "GraphError",
    "SubgraphCache", "build_graph", "canonical_shape", "draw_graph", "virtual_edges",
]
