"""A DARTS-style network built from a genotype: stem -> cells -> pooling -> classifier."""

from __future__ import annotations

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

    def num_params(self, num_classes: int = 10, imagenet_input: bool = False) -> int:
        """Parameter count, from a build on the meta device (no memory, no initialisation)."""
        with torch.device("meta"):
            net = self.build(num_classes, imagenet_input)
        return sum(p.numel() for p in net.parameters())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["genotype"] = self.genotype.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        d = dict(d)
        d["genotype"] = Genotype.from_dict(d["genotype"])
        return cls(**d)


class Cell(nn.Module):
    """One normal or reduction cell: ``(s0, s1) -> (B, out_channels, H', W')``.

    Only computation that reaches the output is built: "none" edges are dropped, nodes cut
    off from both inputs by them are dead, and nodes whose results never reach a concat
    node are skipped. So every parameter of the cell is used in the forward pass, which
    the parameter-predicting graph relies on, and no time is spent on adding zeros.

    Args:
        edges, concat: one cell of a ``Genotype``.
        C_pp, C_p: channels of ``s0`` (two cells back) and ``s1`` (previous cell).
        C: channels of every op in the cell.
        reduction: edges leaving the cell inputs have stride 2.
        reduction_prev: the previous cell halved the resolution, so ``s0`` is twice the
            size of ``s1`` and its preprocessing must halve it too.
        norm: batch norm (True) or none.
    """

    def __init__(
        self,
        edges: tuple[Edge, ...],
        concat: tuple[int, ...],
        C_pp: int,
        C_p: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        norm: bool,
    ) -> None:
        super().__init__()
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

        self.pre0: nn.Module | None = None
        if used[0]:
            self.pre0 = (
                FactorizedReduce(C_pp, C, norm) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, norm)
            )
        self.pre1 = ReLUConvBN(C_p, C, 1, 1, norm) if used[1] else None
        self.ops = nn.ModuleList()
        self.op_names: list[str] = []  # name of each op in self.ops
        self.wiring: list[tuple[int, int]] = []  # (node, src) of each op in self.ops, by node
        for node in range(2, n_nodes):
            if used[node]:
                for op, src in live_inputs[node]:
                    stride = 2 if reduction and src < 2 else 1
                    self.ops.append(make_op(op, C, stride, norm))
                    self.op_names.append(op)
                    self.wiring.append((node, src))
        self.n_nodes = n_nodes
        self.outputs = outputs
        self.out_channels = len(outputs) * C

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
    """

    def __init__(
        self,
        genotype: Genotype,
        C: int = 32,
        num_classes: int = 10,
        n_cells: int = 8,
        imagenet_input: bool = False,
        **config: Any,
    ) -> None:
        super().__init__()
        cfg = NetConfig(genotype, C=C, n_cells=n_cells, **config)
        self.config = cfg
        self.genotype = genotype
        self.num_classes = num_classes
        self.imagenet_input = imagenet_input

        C_stem = cfg.stem_mult * C
        self.stem = _stem(C_stem, cfg, imagenet_input)
        reductions = {n_cells // 3, 2 * n_cells // 3}
        C_pp, C_p, C_cell = C_stem, C_stem, C
        reduction_prev = False
        self.cells = nn.ModuleList()
        for i in range(n_cells):
            reduction = i in reductions
            if reduction:
                C_cell *= cfg.C_mult
            edges, concat = (
                (genotype.reduce, genotype.reduce_concat) if reduction
                else (genotype.normal, genotype.normal_concat)
            )
            cell = Cell(edges, concat, C_pp, C_p, C_cell, reduction, reduction_prev, cfg.norm)
            self.cells.append(cell)
            C_pp, C_p = C_p, cell.out_channels
            reduction_prev = reduction

        grid = 1 if cfg.global_pool else 2
        self.pool = nn.AdaptiveAvgPool2d(grid)
        features = C_p * grid * grid
        if cfg.fc_layers == 1:
            self.classifier = nn.Linear(features, num_classes)
        else:
            self.classifier = nn.Sequential(
                nn.Linear(features, cfg.fc_dim), nn.ReLU(), nn.Linear(cfg.fc_dim, num_classes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.pool(s1).flatten(1))


def _stem(C_stem: int, cfg: NetConfig, imagenet_input: bool) -> nn.Sequential:
    """``(B, 3, H, W) -> (B, C_stem, H/s, W/s)``, s = 1 (CIFAR) or 4 (ImageNet), x2 with stem_pool."""
    k, norm = cfg.stem_kernel, cfg.norm
    stride = 2 if imagenet_input else 1
    if cfg.stem_type == "simple":
        layers = [nn.Conv2d(3, C_stem, k, stride, padding=k // 2, bias=not norm), norm2d(C_stem, norm)]
        if imagenet_input:
            layers.append(nn.MaxPool2d(3, 2, padding=1))
    else:
        mid = C_stem // 2
        layers = [
            nn.Conv2d(3, mid, k, stride, padding=k // 2, bias=not norm),
            norm2d(mid, norm),
            nn.ReLU(),
            nn.Conv2d(mid, C_stem, 3, stride, padding=1, bias=not norm),
            norm2d(C_stem, norm),
        ]
    if cfg.stem_pool:
        layers.append(nn.MaxPool2d(3, 2, padding=1))
    return nn.Sequential(*layers)
