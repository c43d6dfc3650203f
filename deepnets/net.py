"""A DARTS-style network built from a genotype: stem -> cells -> pooling -> classifier."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import nn

from deepnets.genotypes import Edge, Genotype
from deepnets.ops import FactorizedReduce, ReLUConvBN, make_op, norm2d

StemType = Literal["simple", "darts"]


@dataclass(frozen=True)
class NetConfig:
    """One architecture: a genotype plus the macro hyper-parameters around it.

    The number of classes and the input resolution are not part of it: the same
    architecture is built for CIFAR (32x32) or ImageNet (224x224) input by ``build``.

    Attributes:
        genotype: the normal and reduction cells.
        C: channels of each cell op in the first stage (doubled by ``C_mult`` at reductions).
        n_cells: number of cells; the cells at ``n_cells // 3`` and ``2 * n_cells // 3``
            are reduction cells.
        C_mult: channel multiplier at each reduction cell (1 or 2).
        stem_type: "simple" (one k x k conv) or "darts" (k x k conv, ReLU, 3x3 conv).
        stem_kernel: kernel of the first convolution (3, 5 or 7).
        stem_pool: an extra 3x3 stride-2 max pool at the end of the stem.
        norm: batch norm everywhere (True) or no normalisation at all (False).
        fc_layers: linear layers in the head: 1 (classifier only) or 2 (hidden + classifier).
        fc_dim: width of the hidden linear layer when ``fc_layers == 2``.
        global_pool: global average pooling before the head; if False, average-pool to
            a 2x2 grid and flatten, which keeps coarse spatial layout and still works at
            any input resolution.
        stem_mult: stem output channels are ``stem_mult * C``.
    """

    genotype: Genotype
    C: int = 32
    n_cells: int = 8
    C_mult: int = 2
    stem_type: StemType = "simple"
    stem_kernel: int = 3
    stem_pool: bool = False
    norm: bool = True
    fc_layers: int = 1
    fc_dim: int = 256
    global_pool: bool = True
    stem_mult: int = 3

    def __post_init__(self) -> None:
        if self.C < 2 or self.C % 2:
            raise ValueError(f"C must be even and >= 2 (factorised reductions halve it), got {self.C}")
        if self.n_cells < 1:
            raise ValueError(f"n_cells must be >= 1, got {self.n_cells}")
        if self.C_mult not in (1, 2):
            raise ValueError(f"C_mult must be 1 or 2, got {self.C_mult}")
        if self.stem_type not in ("simple", "darts"):
            raise ValueError(f"stem_type must be 'simple' or 'darts', got {self.stem_type!r}")
        if self.stem_kernel not in (3, 5, 7):
            raise ValueError(f"stem_kernel must be 3, 5 or 7, got {self.stem_kernel}")
        if self.fc_layers not in (1, 2):
            raise ValueError(f"fc_layers must be 1 or 2, got {self.fc_layers}")

    def build(self, num_classes: int = 10, imagenet_input: bool = False) -> Network:
        kwargs = {f.name: getattr(self, f.name) for f in fields(self)}
        return Network(num_classes=num_classes, imagenet_input=imagenet_input, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["genotype"] = self.genotype.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        d = dict(d)
        d["genotype"] = Genotype.from_dict(d["genotype"])
        return cls(**d)


HW = tuple[int, int]


@dataclass(frozen=True)
class Block:
    """One building block of a network, before it is built.

    ``factory(*args)`` builds it; ``in_shape`` is the shape of one example it receives,
    ``(C, H, W)`` (or ``(features,)`` for the head), for the nominal input size of the
    layout. Blocks are hashable, so costs can be cached per distinct block.
    """

    factory: Callable[..., nn.Module]
    args: tuple[Any, ...]
    in_shape: tuple[int, ...]

    def build(self) -> nn.Module:
        return self.factory(*self.args)


@dataclass(frozen=True)
class CellLayout:
    """The blocks of one cell and how they are wired (see ``Cell``)."""

    pre0: Block | None
    pre1: Block | None
    ops: tuple[Block, ...]
    op_names: tuple[str, ...]
    wiring: tuple[tuple[int, int], ...]  # (node, src) of each op, ordered by node
    n_nodes: int
    outputs: tuple[int, ...]
    out_channels: int
    out_hw: HW


@dataclass(frozen=True)
class NetLayout:
    """Every block of a network, in forward order: the plan ``Network`` is built from.

    Parameter and FLOP counts are sums over blocks (``deepnets.cost``), which is how the
    sampler can reject oversized networks without building them.
    """

    stem: Block
    cells: tuple[CellLayout, ...]
    pool_grid: int
    head: Block

    def blocks(self) -> Iterator[Block]:
        yield self.stem
        for cell in self.cells:
            yield from (b for b in (cell.pre0, cell.pre1) if b is not None)
            yield from cell.ops
        yield self.head


def _half(hw: HW) -> HW:
    # Every stride-2 op here (odd kernel k, padding k // 2) maps H to ceil(H / 2).
    return (math.ceil(hw[0] / 2), math.ceil(hw[1] / 2))


def _cell_layout(
    edges: tuple[Edge, ...],
    concat: tuple[int, ...],
    C_pp: int,
    C_p: int,
    C: int,
    reduction: bool,
    reduction_prev: bool,
    norm: bool,
    hw_pp: HW,
    hw_p: HW,
) -> CellLayout:
    n_nodes = 2 + len(edges) // 2
    live_inputs: list[list[tuple[str, int]]] = [[] for _ in range(n_nodes)]
    for i, (op, src) in enumerate(edges):
        if op != "none":
            live_inputs[2 + i // 2].append((op, src))

    live = [True, True] + [False] * (n_nodes - 2)
    for node in range(2, n_nodes):
        live_inputs[node] = [(op, src) for op, src in live_inputs[node] if live[src]]
        live[node] = bool(live_inputs[node])
    outputs = tuple(n for n in dict.fromkeys(concat) if live[n])
    if not outputs:
        raise ValueError(f"cell {edges} computes nothing: 'none' edges cut every concat node off")

    used = [False] * n_nodes
    for node in outputs:
        used[node] = True
    for node in reversed(range(2, n_nodes)):
        if used[node]:
            for _, src in live_inputs[node]:
                used[src] = True

    pre0 = None
    if used[0]:
        pre0 = (
            Block(FactorizedReduce, (C_pp, C, norm), (C_pp, *hw_pp)) if reduction_prev
            else Block(ReLUConvBN, (C_pp, C, 1, 1, norm), (C_pp, *hw_pp))
        )
    pre1 = Block(ReLUConvBN, (C_p, C, 1, 1, norm), (C_p, *hw_p)) if used[1] else None
    hw_out = _half(hw_p) if reduction else hw_p
    ops, names, wiring = [], [], []
    for node in range(2, n_nodes):
        if used[node]:
            for op, src in live_inputs[node]:
                stride = 2 if reduction and src < 2 else 1
                ops.append(Block(make_op, (op, C, stride, norm), (C, *(hw_p if src < 2 else hw_out))))
                names.append(op)
                wiring.append((node, src))
    return CellLayout(
        pre0, pre1, tuple(ops), tuple(names), tuple(wiring), n_nodes, outputs, len(outputs) * C, hw_out
    )


def net_layout(
    cfg: NetConfig, num_classes: int = 10, imagenet_input: bool = False, input_hw: HW | None = None
) -> NetLayout:
    """The blocks of ``cfg`` built for ``num_classes``; shapes for ``input_hw`` (default 32 or 224).

    Raises:
        ValueError: a cell of the genotype computes nothing (see ``Cell``).
    """
    hw = input_hw or ((224, 224) if imagenet_input else (32, 32))
    C_stem = cfg.stem_mult * cfg.C
    stem_args = (C_stem, cfg.stem_type, cfg.stem_kernel, cfg.stem_pool, cfg.norm, imagenet_input)
    stem = Block(_stem, stem_args, (3, *hw))
    for _ in range((2 if imagenet_input else 0) + cfg.stem_pool):
        hw = _half(hw)

    g = cfg.genotype
    reductions = {cfg.n_cells // 3, 2 * cfg.n_cells // 3}
    C_pp, C_p, C = C_stem, C_stem, cfg.C
    hw_pp = hw_p = hw
    reduction_prev = False
    cells = []
    for i in range(cfg.n_cells):
        reduction = i in reductions
        if reduction:
            C *= cfg.C_mult
        edges, concat = (g.reduce, g.reduce_concat) if reduction else (g.normal, g.normal_concat)
        cell = _cell_layout(
            edges, concat, C_pp, C_p, C, reduction, reduction_prev, cfg.norm, hw_pp, hw_p
        )
        cells.append(cell)
        C_pp, C_p = C_p, cell.out_channels
        hw_pp, hw_p = hw_p, cell.out_hw
        reduction_prev = reduction

    grid = 1 if cfg.global_pool else 2
    features = C_p * grid * grid
    head = Block(_head, (features, cfg.fc_layers, cfg.fc_dim, num_classes), (features,))
    return NetLayout(stem, tuple(cells), grid, head)


class Cell(nn.Module):
    """One normal or reduction cell: ``(s0, s1) -> (B, out_channels, H', W')``.

    ``s0`` is the output of the cell two back, ``s1`` of the previous one; each goes
    through a 1x1 conv (``s0`` through a factorised reduction if the previous cell halved
    the resolution) to the cell width. Only computation that reaches the output is built:
    "none" edges are dropped, nodes cut off from both inputs by them are dead, and nodes
    whose results never reach a concat node are skipped. So every parameter is used in
    the forward pass, which the parameter-predicting graph relies on, and no time is
    spent adding zeros.
    """

    def __init__(self, layout: CellLayout, build_block: Callable[[Block], nn.Module] = Block.build) -> None:
        super().__init__()
        self.pre0 = build_block(layout.pre0) if layout.pre0 is not None else None
        self.pre1 = build_block(layout.pre1) if layout.pre1 is not None else None
        self.ops = nn.ModuleList(build_block(b) for b in layout.ops)
        self.op_names = layout.op_names
        self.wiring = layout.wiring
        self.n_nodes = layout.n_nodes
        self.outputs = layout.outputs
        self.out_channels = layout.out_channels

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states: list[torch.Tensor | None] = [None] * self.n_nodes
        states[0] = self.pre0(s0) if self.pre0 is not None else None
        states[1] = self.pre1(s1) if self.pre1 is not None else None
        for op, (node, src) in zip(self.ops, self.wiring):
            y = op(states[src])
            states[node] = y if states[node] is None else states[node] + y
        if len(self.outputs) == 1:
            return states[self.outputs[0]]
        return torch.cat([states[n] for n in self.outputs], dim=1)


class Network(nn.Module):
    """Image classifier from a genotype: ``(B, 3, H, W) -> (B, num_classes)``.

    With ``imagenet_input=False`` (CIFAR, 32x32) the stem keeps the resolution; with
    ``imagenet_input=True`` (224x224) it divides it by 4 before the cells, so that both
    versions of an architecture see feature maps of similar sizes. Either runs on any
    input size. Keyword arguments are those of ``NetConfig``; ``self.config`` keeps them.
    ``build_block`` builds each ``Block`` of the layout (``deepnets.NetBuilder`` passes
    a faster one that copies cached blocks).
    """

    def __init__(
        self,
        genotype: Genotype,
        C: int = 32,
        num_classes: int = 10,
        n_cells: int = 8,
        imagenet_input: bool = False,
        *,
        build_block: Callable[[Block], nn.Module] = Block.build,
        **config: Any,
    ) -> None:
        super().__init__()
        self.config = NetConfig(genotype, C=C, n_cells=n_cells, **config)
        self.genotype = genotype
        self.num_classes = num_classes
        self.imagenet_input = imagenet_input
        layout = net_layout(self.config, num_classes, imagenet_input)
        self.stem = build_block(layout.stem)
        self.cells = nn.ModuleList(Cell(c, build_block) for c in layout.cells)
        self.pool = nn.AdaptiveAvgPool2d(layout.pool_grid)
        self.classifier = build_block(layout.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.pool(s1).flatten(1))


def _stem(
    C_stem: int, stem_type: StemType, kernel: int, pool: bool, norm: bool, imagenet_input: bool
) -> nn.Sequential:
    """``(B, 3, H, W) -> (B, C_stem, H/s, W/s)``, s = 1 (CIFAR) or 4 (ImageNet), x2 with pool."""
    stride = 2 if imagenet_input else 1
    if stem_type == "simple":
        layers = [
            nn.Conv2d(3, C_stem, kernel, stride, padding=kernel // 2, bias=not norm),
            norm2d(C_stem, norm),
        ]
        if imagenet_input:
            layers.append(nn.MaxPool2d(3, 2, padding=1))
    else:
        mid = C_stem // 2
        layers = [
            nn.Conv2d(3, mid, kernel, stride, padding=kernel // 2, bias=not norm),
            norm2d(mid, norm),
            nn.ReLU(),
            nn.Conv2d(mid, C_stem, 3, stride, padding=1, bias=not norm),
            norm2d(C_stem, norm),
        ]
    if pool:
        layers.append(nn.MaxPool2d(3, 2, padding=1))
    return nn.Sequential(*layers)


def _head(features: int, fc_layers: int, fc_dim: int, num_classes: int) -> nn.Module:
    """``(B, features) -> (B, num_classes)``: a linear classifier, optionally after a hidden layer."""
    if fc_layers == 1:
        return nn.Linear(features, num_classes)
    return nn.Sequential(nn.Linear(features, fc_dim), nn.ReLU(), nn.Linear(fc_dim, num_classes))
