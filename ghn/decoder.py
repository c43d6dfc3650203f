"""Decoders: node states -> parameter tensors of any shape.

- `WeightDecoder`: an MLP gives ``k_max x k_max`` spatial features per node, a 1x1
  convolution (a ``[C_max, C_max, dec_hid]`` weight) turns them into channels. The MLP
  always computes all ``k_max x k_max`` positions; they are then center-cropped to the
  kernel and the channels sliced to ``min(c, C_max)``, so only the 1x1 convolution shrinks
  with the block (for a 1x1 layer, 1/121 of its cost for an 11x11 one).
  Larger tensors are tiled with that block (`tile`, `tile_into`).
- `VectorDecoder`: 1-D tensors (biases, norm scales, class tokens), ``C_max`` values tiled.
- `HeadDecoder`: the classifier's ``(num_classes, C_max)`` weight and its bias.
- `normalise_weights`, `normalise_vectors`: GHN-2's parameter normalisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ghn.gatedgnn import mlp
from ghn.graph import ROLE_ID


class WeightDecoder(nn.Module):
    """forward(h [n, hid], block (o, i, kh, kw)) -> [n, o, i, kh, kw] with o, i <= C_max."""

    def __init__(self, hid: int, max_shape: tuple[int, int, int, int], dec_hid: int):
        super().__init__()
        c_out, c_in, self.kh, self.kw = max_shape
        self.dec_hid = dec_hid
        self.spatial = mlp(hid, 4 * hid, self.kh * self.kw * dec_hid)
        self.channels = nn.Parameter(torch.randn(c_out, c_in, dec_hid) / math.sqrt(dec_hid))
        self.bias = nn.Parameter(torch.zeros(c_out, c_in))

    def forward(self, h: torch.Tensor, block: tuple[int, int, int, int]) -> torch.Tensor:
        o, i, kh, kw = block
        f = self.spatial(h).view(-1, self.kh, self.kw, self.dec_hid)
        top, left = (self.kh - kh) // 2, (self.kw - kw) // 2
        f = f[:, top : top + kh, left : left + kw]
        w = torch.einsum("nhwd,oid->noihw", f, self.channels[:o, :i])
        return w + self.bias[:o, :i, None, None]


class VectorDecoder(nn.Module):
    """forward(h [n, hid], role [n] long) -> [n, C_max]: one output row per parameter role."""

    def __init__(self, hid: int, length: int, roles: int):
        super().__init__()
        self.length, self.roles = length, roles
        self.net = mlp(hid, 2 * hid, roles * length)

    def forward(self, h: torch.Tensor, role: torch.Tensor) -> torch.Tensor:
        out = self.net(h).view(-1, self.roles, self.length)
        return out[torch.arange(h.shape[0], device=h.device), role]


class HeadDecoder(nn.Module):
    """Classifier layers: weight(h [n, hid]) -> [n, num_classes, C_max]; bias(h) -> [n, num_classes]."""

    def __init__(self, hid: int, num_classes: int, c_in: int):
        super().__init__()
        self.num_classes, self.c_in = num_classes, c_in
        self.w = mlp(hid, 4 * hid, num_classes * c_in)
        self.b = mlp(hid, hid, num_classes)

    def weight(self, h: torch.Tensor) -> torch.Tensor:
        return self.w(h).view(-1, self.num_classes, self.c_in)

    def bias(self, h: torch.Tensor) -> torch.Tensor:
        return self.b(h)


def tile(block: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Repeat `block` along every dimension and crop it to `shape` (same number of dims)."""
    reps = [math.ceil(s / b) for s, b in zip(shape, block.shape)]
    if all(r == 1 for r in reps):
        return block
    out = block.repeat(*reps)
    return out[tuple(slice(0, s) for s in shape)]


@torch.no_grad()
def tile_into(dst: torch.Tensor, block: torch.Tensor) -> None:
    """``dst.copy_(tile(block, dst.shape))`` without a temporary when sizes divide evenly,
    which is the common case (2048 = 32 x 64); `dst` and `block` have the same ndim."""
    if all(s % b == 0 for s, b in zip(dst.shape, block.shape)):
        split = [x for s, b in zip(dst.shape, block.shape) for x in (s // b, b)]
        expanded = block.reshape([x for b in block.shape for x in (1, b)]).expand(split)
        dst.view(split).copy_(expanded)
    else:
        dst.copy_(tile(block, tuple(dst.shape)))


def normalise_weights(w: torch.Tensor, fan_in: torch.Tensor, relu_after: torch.Tensor) -> torch.Tensor:
    """GHN-2: weights [n, ...] scaled by ``sqrt(beta / fan_in)``, beta = 2 before a ReLU.

    fan_in [n] and relu_after [n] bool, one per tensor."""
    beta = 1.0 + relu_after.to(w.dtype)
    return w * torch.sqrt(beta / fan_in.to(w.dtype)).view(-1, *([1] * (w.dim() - 1)))


def normalise_vectors(v: torch.Tensor, role: torch.Tensor) -> torch.Tensor:
    """GHN-2: norm scales [n, c] squashed to (0, 2) by ``2 sigmoid(p / 2)``, biases and other
    vectors to (-1, 1) by ``tanh(p / 5)``. role [n] indexes `ghn.graph.ROLES`."""
    is_scale = (role == ROLE_ID["scale"]).view(-1, 1)
    return torch.where(is_scale, 2 * torch.sigmoid(v / 2), torch.tanh(v / 5))
