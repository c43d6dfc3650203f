"""Initial node states: op-type embedding + folded-activation embedding + shape embedding."""

from __future__ import annotations

import math

import torch
from torch import nn

from ghn.graph import ACTS, OPS

# Discretised sizes; any other value maps to the nearest one (in log scale).
CHANNELS: tuple[int, ...] = (
    0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
)
KERNELS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 16, 32)


def _log_midpoints(values: tuple[int, ...]) -> torch.Tensor:
    logs = [math.log2(v) for v in values[1:]]  # values[0] == 0 is matched exactly
    return torch.tensor([(a + b) / 2 for a, b in zip(logs, logs[1:])])


class NodeEncoder(nn.Module):
    """``h0 = E_op[op] + E_act[act] + E_cout[c_out] + E_cin[c_in] + E_kh[k_h] + E_kw[k_w]``.

    forward(op [n] long, act [n] long, shape [n, 4] long) -> [n, hid]
    """

    def __init__(self, hid: int):
        super().__init__()
        self.op = nn.Embedding(len(OPS), hid)
        self.act = nn.Embedding(len(ACTS), hid)
        self.c_out = nn.Embedding(len(CHANNELS), hid)
        self.c_in = nn.Embedding(len(CHANNELS), hid)
        self.k_h = nn.Embedding(len(KERNELS), hid)
        self.k_w = nn.Embedding(len(KERNELS), hid)
        self.register_buffer("_ch_mid", _log_midpoints(CHANNELS), persistent=False)
        self.register_buffer("_k_mid", _log_midpoints(KERNELS), persistent=False)

    @staticmethod
    def discretise(values: torch.Tensor, midpoints: torch.Tensor) -> torch.Tensor:
        """Index of the nearest table value; 0 stays 0 (no parameter)."""
        logs = torch.log2(values.clamp(min=1).to(midpoints.dtype))
        idx = torch.bucketize(logs, midpoints) + 1
        return torch.where(values > 0, idx, torch.zeros_like(idx))

    def forward(self, op: torch.Tensor, act: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        ch = self.discretise(shape[:, :2], self._ch_mid)
        k = self.discretise(shape[:, 2:], self._k_mid)
        return (
            self.op(op) + self.act(act)
            + self.c_out(ch[:, 0]) + self.c_in(ch[:, 1]) + self.k_h(k[:, 0]) + self.k_w(k[:, 1])
        )
