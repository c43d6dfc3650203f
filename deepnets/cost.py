"""Parameter and FLOP counts of architectures, without building the whole network.

A network's count is the sum over the blocks of its layout (stem, cell preprocessing,
cell ops, head), and the same few hundred blocks recur across architectures, so each
distinct block is measured once per process and cached. That makes counting a sampled
architecture take well under a millisecond instead of the ~20-50 ms of building it, which
is what lets the sampler reject oversized networks cheaply.

FLOPs are those of ``torch.utils.flop_counter`` (2 per multiply-add of convolutions,
matrix products and attention; pooling, norms, activations and sums are not counted),
for one example. Blocks are the only places where counted ops happen, so block sums
equal a count of the whole forward pass; the tests check this.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from deepnets.net import HW, Block, NetConfig, net_layout

# Distinct blocks seen by one process: ops x widths x strides x resolutions, a few thousand.
_CACHE_SIZE = 1 << 16


def count_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass of ``module`` on one example of ``input_shape``.

    Runs in eval mode, on the module's device; put the module on the meta device to
    count without memory or arithmetic.
    """
    device = next(iter(module.parameters()), torch.empty(0)).device
    x = torch.empty(1, *input_shape, device=device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


def _on_meta(factory: Callable[..., nn.Module], args: tuple[Any, ...]) -> nn.Module:
    with torch.device("meta"):
        return factory(*args)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _block_params(factory: Callable[..., nn.Module], args: tuple[Any, ...]) -> int:
    return sum(p.numel() for p in _on_meta(factory, args).parameters())


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _block_flops(factory: Callable[..., nn.Module], args: tuple[Any, ...], in_shape: tuple[int, ...]) -> int:
    return count_flops(_on_meta(factory, args), in_shape)


def block_params(block: Block) -> int:
    return _block_params(block.factory, block.args)


def block_flops(block: Block) -> int:
    return _block_flops(block.factory, block.args, block.in_shape)


def num_params(cfg: NetConfig, num_classes: int = 10, imagenet_input: bool = False) -> int:
    """Parameters of ``cfg.build(num_classes, imagenet_input)``, without building it.

    Raises:
        ValueError: a cell of the genotype computes nothing.
    """
    return sum(block_params(b) for b in net_layout(cfg, num_classes, imagenet_input).blocks())


def num_flops(
    cfg: NetConfig, num_classes: int = 10, imagenet_input: bool = False, input_hw: HW | None = None
) -> int:
    """FLOPs of one ``input_hw`` image (default 32x32, or 224x224 with ``imagenet_input``)."""
    layout = net_layout(cfg, num_classes, imagenet_input, input_hw)
    return sum(block_flops(b) for b in layout.blocks())
