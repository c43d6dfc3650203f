"""The operation set of the DeepNets-1M cell search space.

Every op maps ``(B, C, H, W)`` to ``(B, C, ceil(H / stride), ceil(W / stride))``, so any
op fits on any edge. Convolutional ops use the pre-activation ``ReLU -> conv -> norm``
order of DARTS. ``norm=False`` builds the normalisation-free variant: norm layers become
identities and the convolutions that would have fed them get a bias instead.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn


def norm2d(C: int, enabled: bool) -> nn.Module:
    return nn.BatchNorm2d(C) if enabled else nn.Identity()


# The ReLUs are functional rather than nn.ReLU modules: a network holds hundreds of ops,
# and each module costs construction time and pickling time in the loader's workers.


class ReLUConvBN(nn.Module):
    """ReLU -> conv(k, stride) -> norm. Plain 1x1/3x3/5x5 convs and the cell preprocessing."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(C_in, C_out, kernel, stride, padding=kernel // 2, bias=not norm)
        self.bn = norm2d(C_out, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(F.relu(x)))


class FactorizedConv(nn.Module):
    """ReLU -> conv(1 x k) -> conv(k x 1) -> norm: a k x k receptive field at 2k weights per channel pair."""

    def __init__(self, C: int, kernel: int, stride: int, norm: bool) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv_1xk = nn.Conv2d(C, C, (1, kernel), (1, stride), padding=(0, pad), bias=False)
        self.conv_kx1 = nn.Conv2d(C, C, (kernel, 1), (stride, 1), padding=(pad, 0), bias=not norm)
        self.bn = norm2d(C, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv_kx1(self.conv_1xk(F.relu(x))))


def _depthwise(C: int, kernel: int, stride: int, dilation: int) -> nn.Conv2d:
    pad = dilation * (kernel // 2)
    return nn.Conv2d(C, C, kernel, stride, padding=pad, dilation=dilation, groups=C, bias=False)


class DilConv(nn.Module):
    """ReLU -> depthwise conv(k, stride, dilation) -> pointwise conv -> norm."""

    def __init__(self, C: int, kernel: int, stride: int, dilation: int, norm: bool) -> None:
        super().__init__()
        self.dw = _depthwise(C, kernel, stride, dilation)
        self.pw = nn.Conv2d(C, C, 1, bias=not norm)
        self.bn = norm2d(C, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pw(self.dw(F.relu(x))))


class SepConv(nn.Module):
    """Two stacked ReLU -> depthwise -> pointwise -> norm blocks, only the first strided (DARTS)."""

    def __init__(self, C: int, kernel: int, stride: int, norm: bool) -> None:
        super().__init__()
        self.dw1 = _depthwise(C, kernel, stride, 1)
        self.pw1 = nn.Conv2d(C, C, 1, bias=not norm)
        self.bn1 = norm2d(C, norm)
        self.dw2 = _depthwise(C, kernel, 1, 1)
        self.pw2 = nn.Conv2d(C, C, 1, bias=not norm)
        self.bn2 = norm2d(C, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.pw1(self.dw1(F.relu(x))))
        return self.bn2(self.pw2(self.dw2(F.relu(x))))


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convs on pixel grids offset by one.

    Unlike a single strided 1x1 conv, together they see every input pixel. The offset
    path pads the bottom/right edge so odd sizes give ``ceil(H / 2)`` like every other op.
    """

    def __init__(self, C_in: int, C_out: int, norm: bool) -> None:
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        self.conv_a = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=not norm)
        self.conv_b = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=not norm)
        self.norm = norm2d(C_out, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.norm(torch.cat([self.conv_a(x), self.conv_b(shifted)], dim=1))


class SpatialSelfAttention(nn.Module):
    """Multi-head self-attention among the H*W positions of a feature map (one token per pixel).

    ``(B, C, H, W) -> (B, C, H', W')``; at stride 2 the map is average-pooled first, which
    also divides the quadratic attention cost by 16. Pre-norm (LayerNorm over channels)
    as in vision transformers. There is no positional embedding: its size would tie the
    op to one input resolution, and the convolutions around it already encode position.
    """

    def __init__(self, C: int, stride: int, norm: bool) -> None:
        super().__init__()
        self.pool = _downsample(stride)
        self.norm = nn.LayerNorm(C) if norm else nn.Identity()
        self.attn = nn.MultiheadAttention(C, _num_heads(C), batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        B, C, H, W = x.shape
        tokens = self.norm(x.flatten(2).transpose(1, 2))  # (B, H*W, C)
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return out.transpose(1, 2).reshape(B, C, H, W)


class ChannelSqueezeExcite(nn.Module):
    """Channel gating: ``x * sigmoid(W2 relu(W1 mean_hw(x)))`` with a bottleneck of C/4."""

    def __init__(self, C: int, stride: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, C // reduction)
        self.pool = _downsample(stride)
        self.fc1 = nn.Conv2d(C, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, C, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        gate = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class Zero(nn.Module):
    """The "none" op: a zero map of the output shape.

    Cells never instantiate it (they drop "none" edges, so that the computational graph
    holds only real computation); it exists so that ``make_op`` covers every op name.
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, :, :: self.stride, :: self.stride])


def _downsample(stride: int) -> nn.Module:
    return nn.AvgPool2d(3, 2, padding=1, count_include_pad=False) if stride == 2 else nn.Identity()


def _num_heads(C: int) -> int:
    """Most heads (up to 4) that divide C while keeping at least 8 channels per head."""
    for heads in (4, 2):
        if C % heads == 0 and C // heads >= 8:
            return heads
    return 1


OpFactory = Callable[[int, int, bool], nn.Module]

# name -> factory(C, stride, norm). The order of this table is the order in which the
# generator draws ops, so appending is safe but reordering changes every split.
OPS: Mapping[str, OpFactory] = MappingProxyType({
    "none": lambda C, stride, norm: Zero(stride),
    "skip_connect": lambda C, stride, norm: (
        nn.Identity() if stride == 1 else FactorizedReduce(C, C, norm)
    ),
    "max_pool_3x3": lambda C, stride, norm: nn.MaxPool2d(3, stride, padding=1),
    "avg_pool_3x3": lambda C, stride, norm: nn.AvgPool2d(
        3, stride, padding=1, count_include_pad=False
    ),
    "sep_conv_3x3": lambda C, stride, norm: SepConv(C, 3, stride, norm),
    "sep_conv_5x5": lambda C, stride, norm: SepConv(C, 5, stride, norm),
    "sep_conv_7x7": lambda C, stride, norm: SepConv(C, 7, stride, norm),
    "dil_conv_3x3": lambda C, stride, norm: DilConv(C, 3, stride, 2, norm),
    "dil_conv_5x5": lambda C, stride, norm: DilConv(C, 5, stride, 2, norm),
    "conv_1x1": lambda C, stride, norm: ReLUConvBN(C, C, 1, stride, norm),
    "conv_3x3": lambda C, stride, norm: ReLUConvBN(C, C, 3, stride, norm),
    "conv_5x5": lambda C, stride, norm: ReLUConvBN(C, C, 5, stride, norm),
    "conv_7x1_1x7": lambda C, stride, norm: FactorizedConv(C, 7, stride, norm),
    "msa": lambda C, stride, norm: SpatialSelfAttention(C, stride, norm),
    "cse": lambda C, stride, norm: ChannelSqueezeExcite(C, stride),
})

OP_NAMES: tuple[str, ...] = tuple(OPS)


def make_op(name: str, C: int, stride: int, norm: bool = True) -> nn.Module:
    """Build op ``name`` on ``C`` channels: ``(B, C, H, W) -> (B, C, ceil(H/stride), ceil(W/stride))``."""
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    try:
        factory = OPS[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; known: {OP_NAMES}") from None
    return factory(C, stride, norm)
