"""Sampling architectures, and the seeded DeepNets-1M splits.

Architecture ``i`` of a split is drawn from its own random stream, seeded by
``SeedSequence(split.seed, spawn_key=(i,))`` (the ``i``-th child of the split's seed), so
any index is generated directly, in any order, in any process, on any machine. Draws use
the raw output of the PCG64 bit generator, whose stream numpy guarantees across versions
and platforms (``Generator`` methods are allowed to change between numpy releases).

The sampler is part of the data: changing the order or meaning of draws changes every
split, so such a change must bump ``GENERATOR_VERSION`` (recorded in exported files).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Mapping, TypeVar

import numpy as np

from deepnets.cost import num_params
from deepnets.genotypes import Edge, Genotype
from deepnets.net import NetConfig
from deepnets.ops import OP_NAMES


GENERATOR_VERSION = 1

T = TypeVar("T")


@dataclass(frozen=True)
class SamplerConfig:
    """A distribution over architectures; the defaults are the published DeepNets-1M rules.

    Ranges are inclusive ``(low, high)`` pairs; tuples of options are drawn uniformly.

    Attributes:
        steps: intermediate sum nodes per cell, drawn separately for both cells.
        n_cells: cells per network.
        C: base width options.
        C_mult: channel multipliers at reduction cells.
        stem_types, stem_kernels: stem options (see ``NetConfig``).
        p_stem_pool: probability of the extra stem max pool.
        p_no_norm: probability of a normalisation-free network, applied only to networks
            of at most ``max_cells_no_norm`` cells (deeper ones without norm are unstable).
        fc_layers: options for the number of linear layers in the head.
        p_global_pool: probability of global average pooling (else a 2x2 grid).
        ops: ops an edge can take, drawn uniformly.
        max_params: larger networks (CIFAR-10 head) are rejected and redrawn.
        max_tries: draws before giving up on one index (only reachable by configs that
            almost never produce a valid network).
    """

    steps: tuple[int, int] = (1, 4)
    n_cells: tuple[int, int] = (4, 18)
    C: tuple[int, ...] = (32,)
    C_mult: tuple[int, ...] = (1, 2)
    stem_types: tuple[str, ...] = ("simple", "darts")
    stem_kernels: tuple[int, ...] = (3, 5, 7)
    p_stem_pool: float = 0.5
    p_no_norm: float = 0.1
    max_cells_no_norm: int = 8
    fc_layers: tuple[int, ...] = (1, 2)
    p_global_pool: float = 0.95
    ops: tuple[str, ...] = OP_NAMES
    max_params: int = 10_000_000
    max_tries: int = 1000

    def __post_init__(self) -> None:
        for name in ("steps", "n_cells"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"{name} must be an inclusive range 1 <= low <= high, got {(low, high)}")
        unknown = set(self.ops) - set(OP_NAMES)
        if unknown:
            raise ValueError(f"unknown ops {sorted(unknown)}")

    def narrow(self) -> SamplerConfig:
        """The cheap variant for CPU meta-training: base width 8-16, 4-8 cells."""
        return replace(self, C=(8, 12, 16), n_cells=(4, 8))


class _Draws:
    """Uniform draws from one PCG64 stream (see the module docstring for why raw bits)."""

    def __init__(self, seed: int, index: int) -> None:
        self._bits = np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,)))

    def uniform(self) -> float:
        """A float in [0, 1) from the top 53 bits of the next 64-bit output."""
        return (int(self._bits.random_raw()) >> 11) * 2.0**-53

    def below(self, n: int) -> int:
        return int(self.uniform() * n)

    def integer(self, low: int, high: int) -> int:
        return low + self.below(high - low + 1)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]

    def bernoulli(self, p: float) -> bool:
        return self.uniform() < p


def _draw_cell(draws: _Draws, cfg: SamplerConfig) -> tuple[tuple[Edge, ...], tuple[int, ...]]:
    """Edges of one cell; every node sums two distinct earlier nodes; concat = the leaves."""
    steps = draws.integer(*cfg.steps)
    edges: list[Edge] = []
    for k in range(steps):
        n_inputs = 2 + k
        a = draws.below(n_inputs)
        b = draws.below(n_inputs - 1)
        b += b >= a  # skip a, so the two inputs differ
        edges += [(draws.choice(cfg.ops), a), (draws.choice(cfg.ops), b)]
    # Nodes that feed no other node (through a real op) form the output, so every node
    # contributes to it; the last node always qualifies.
    consumed = {src for op, src in edges if op != "none"}
    concat = tuple(n for n in range(2, 2 + steps) if n not in consumed)
    return tuple(edges), concat


def _draw(draws: _Draws, cfg: SamplerConfig) -> NetConfig:
    normal, normal_concat = _draw_cell(draws, cfg)
    reduce, reduce_concat = _draw_cell(draws, cfg)
    n_cells = draws.integer(*cfg.n_cells)
    C = draws.choice(cfg.C)
    C_mult = draws.choice(cfg.C_mult)
    stem_type = draws.choice(cfg.stem_types)
    stem_kernel = draws.choice(cfg.stem_kernels)
    stem_pool = draws.bernoulli(cfg.p_stem_pool)
    # Always draw, so that the rest of the stream does not depend on n_cells.
    no_norm = draws.bernoulli(cfg.p_no_norm) and n_cells <= cfg.max_cells_no_norm
    fc_layers = draws.choice(cfg.fc_layers)
    global_pool = draws.bernoulli(cfg.p_global_pool)
    return NetConfig(
        genotype=Genotype(normal, normal_concat, reduce, reduce_concat),
        C=C,
        n_cells=n_cells,
        C_mult=C_mult,
        stem_type=stem_type,
        stem_kernel=stem_kernel,
        stem_pool=stem_pool,
        norm=not no_norm,
        fc_layers=fc_layers,
        global_pool=global_pool,
    )


def _accept(net: NetConfig, cfg: SamplerConfig) -> bool:
    try:
        return num_params(net) <= cfg.max_params
    except ValueError:
        # A cell whose every output node is cut off from the inputs by "none" edges.
        return False


def sample_architecture(seed: int, index: int, cfg: SamplerConfig) -> NetConfig:
    """Architecture ``index`` of the stream seeded by ``seed``: draw until one is accepted."""
    draws = _Draws(seed, index)
    for _ in range(cfg.max_tries):
        net = _draw(draws, cfg)
        if _accept(net, cfg):
            return net
    raise RuntimeError(f"no valid architecture in {cfg.max_tries} draws (seed {seed}, index {index})")


@dataclass(frozen=True)
class Split:
    """A fixed, indexable set of architectures: ``split[i]`` is a ``NetConfig``.

    Nothing is stored: ``split[i]`` is generated on demand, identically everywhere.
    """

    name: str
    size: int
    seed: int
    sampler: SamplerConfig

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> NetConfig:
        if not 0 <= index < self.size:
            raise IndexError(f"split {self.name!r} has {self.size} architectures, no index {index}")
        return sample_architecture(self.seed, index, self.sampler)

    def __iter__(self) -> Iterator[NetConfig]:
        return (self[i] for i in range(self.size))


_PUBLISHED = SamplerConfig()

# The out-of-distribution splits change one factor each. Sizes follow the paper
# (500 in-distribution val/test, 100 per out-of-distribution split).
_SPLITS: Mapping[str, Split] = MappingProxyType({
    s.name: s
    for s in (
        Split("train", 1_000_000, 20210001, _PUBLISHED),
        Split("val", 500, 20210002, _PUBLISHED),
        Split("test", 500, 20210003, _PUBLISHED),
        Split("wide", 100, 20210004, replace(_PUBLISHED, C=(64,))),
        Split("deep", 100, 20210005, replace(_PUBLISHED, n_cells=(10, 36))),
        Split("dense", 100, 20210006, replace(_PUBLISHED, steps=(5, 10))),
        Split(
            "bnfree", 100, 20210007,
            replace(_PUBLISHED, p_no_norm=1.0, n_cells=(4, _PUBLISHED.max_cells_no_norm)),
        ),
    )
})
SPLIT_NAMES: tuple[str, ...] = tuple(_SPLITS)


def get_split(name: str, narrow: bool = False) -> Split:
    """The split called ``name`` (one of ``SPLIT_NAMES``).

    ``narrow=True`` (train and val only) keeps the seed but draws from
    ``SamplerConfig.narrow()``, for cheap CPU meta-training. Test splits stay at the
    published distribution so that results compare with the paper's.
    """
    try:
        split = _SPLITS[name]
    except KeyError:
        raise ValueError(f"unknown split {name!r}; known: {SPLIT_NAMES}") from None
    if narrow:
        if name not in ("train", "val"):
            raise ValueError(f"only train and val have a narrow variant, not {name!r}")
        split = replace(split, name=f"{name}-narrow", sampler=split.sampler.narrow())
    return split
