"""Genotypes: the wiring of a DARTS-style normal cell and reduction cell.

A cell has two input nodes (0: output of the cell before the previous one, 1: output of
the previous cell) and ``steps`` intermediate sum nodes numbered ``2 .. steps + 1``.
Intermediate node ``2 + k`` is the sum of two edges, stored at positions ``2k`` and
``2k + 1`` of the cell's edge list; each edge is an ``(op, input_node)`` pair. The cell
output is the channel-wise concatenation of the nodes listed in ``concat``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from deepnets.ops import OP_NAMES

Edge = tuple[str, int]

_EDGES_PER_STEP = 2


@dataclass(frozen=True)
class Genotype:
    """Normal and reduction cell wiring; immutable and hashable so it can key caches.

    Attributes:
        normal: ``2 * steps`` edges ``(op, input_node)`` of the normal cell.
        normal_concat: intermediate nodes concatenated into the normal cell's output.
        reduce: edges of the reduction cell (edges leaving nodes 0 and 1 have stride 2).
        reduce_concat: intermediate nodes concatenated into the reduction cell's output.
    """

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        # Normalise lists (e.g. from JSON or hand-written literals) to tuples, so that
        # equality and hashing do not depend on how the genotype was written down.
        for name in ("normal", "reduce"):
            edges = tuple((str(op), int(src)) for op, src in getattr(self, name))
            object.__setattr__(self, name, edges)
        for name in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, name, tuple(int(n) for n in getattr(self, name)))
        _validate_cell("normal", self.normal, self.normal_concat)
        _validate_cell("reduce", self.reduce, self.reduce_concat)

    @property
    def normal_steps(self) -> int:
        return len(self.normal) // _EDGES_PER_STEP

    @property
    def reduce_steps(self) -> int:
        return len(self.reduce) // _EDGES_PER_STEP

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-ready form: ``{"n": [[op, src], ...], "nc": [...], "r": ..., "rc": ...}``."""
        return {
            "n": [list(e) for e in self.normal],
            "nc": list(self.normal_concat),
            "r": [list(e) for e in self.reduce],
            "rc": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Genotype:
        try:
            return cls(
                normal=tuple(tuple(e) for e in d["n"]),
                normal_concat=tuple(d["nc"]),
                reduce=tuple(tuple(e) for e in d["r"]),
                reduce_concat=tuple(d["rc"]),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a genotype dict: {d!r} ({e!r})") from e

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, s: str) -> Genotype:
        return cls.from_dict(json.loads(s))

    def __str__(self) -> str:
        return (
            "Genotype(\n"
            f"  normal ({self.normal_steps} steps, concat {list(self.normal_concat)}):\n"
            f"{_format_cell(self.normal)}\n"
            f"  reduce ({self.reduce_steps} steps, concat {list(self.reduce_concat)}):\n"
            f"{_format_cell(self.reduce)}\n)"
        )


def _format_cell(edges: tuple[Edge, ...]) -> str:
    lines = []
    for k in range(len(edges) // _EDGES_PER_STEP):
        pair = edges[_EDGES_PER_STEP * k : _EDGES_PER_STEP * (k + 1)]
        terms = " + ".join(f"{op}(n{src})" for op, src in pair)
        lines.append(f"    n{k + 2} = {terms}")
    return "\n".join(lines)


def _validate_cell(name: str, edges: tuple[Edge, ...], concat: tuple[int, ...]) -> None:
    if not edges or len(edges) % _EDGES_PER_STEP:
        raise ValueError(f"{name} cell needs a positive, even number of edges, got {len(edges)}")
    for i, (op, src) in enumerate(edges):
        if op not in OP_NAMES:
            raise ValueError(f"{name} cell edge {i}: unknown op {op!r}; known: {OP_NAMES}")
        node = 2 + i // _EDGES_PER_STEP
        if not 0 <= src < node:
            raise ValueError(f"{name} cell edge {i}: node {node} cannot take input {src}")
    n_nodes = 2 + len(edges) // _EDGES_PER_STEP
    if not concat or any(not 2 <= n < n_nodes for n in concat):
        raise ValueError(f"{name} cell concat {concat} must list intermediate nodes 2..{n_nodes - 1}")


# Cells found by architecture search, as published (Liu et al. 2019, "DARTS", the second-
# order "V2" cell; Chen et al. 2019, "Progressive DARTS"). Written with this package's op
# names: "skip_connect" is the identity (a factorised reduction at stride 2).
DARTS = Genotype(
    normal=(
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("skip_connect", 0),
        ("skip_connect", 0), ("dil_conv_3x3", 2),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("skip_connect", 2), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("skip_connect", 2),
        ("skip_connect", 2), ("max_pool_3x3", 1),
    ),
    reduce_concat=(2, 3, 4, 5),
)

PDARTS = Genotype(
    normal=(
        ("skip_connect", 0), ("dil_conv_3x3", 1),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 0), ("dil_conv_5x5", 4),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("avg_pool_3x3", 0), ("sep_conv_5x5", 1),
        ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
        ("max_pool_3x3", 0), ("dil_conv_3x3", 1),
        ("dil_conv_3x3", 1), ("dil_conv_5x5", 3),
    ),
    reduce_concat=(2, 3, 4, 5),
)

# A transformer block as a cell: n2 = x + MSA(x), n3 = n2 + MLP(n2), where the token-wise
# MLP is a 1x1 convolution. The reduction cell merges patches with a strided 3x3
# convolution next to a pooled shortcut, as hierarchical vision transformers do.
VIT = Genotype(
    normal=(
        ("msa", 1), ("skip_connect", 1),
        ("conv_1x1", 2), ("skip_connect", 2),
    ),
    normal_concat=(3,),
    reduce=(
        ("conv_3x3", 1), ("avg_pool_3x3", 1),
    ),
    reduce_concat=(2,),
)
