"""Grow a trained meta-model to a larger node-state size, keeping what it predicts.

Net2Net-style widening (Chen et al., 2016): unit ``j`` of every layer whose width scales
with ``hid`` becomes ``r`` copies (``repeat_interleave``), and every weight that reads such
a layer splits its input columns evenly across the copies, so the wider model computes the
same function. That holds through the whole GHN: sums of messages, the GRU (its gate blocks
stay contiguous under ``repeat_interleave``) and layer norm (copies keep the mean and the
variance). Exact copies would stay copies under training (their gradients are
proportional, which Adam normalises away), so a little noise on the copied weights breaks
the tie.

    big = widen(meta, hid=64)   # meta.config.hid == 32; big predicts (almost) what meta does
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ghn.model import GHN


def widen(meta: GHN, hid: int, noise: float = 1e-2, generator: torch.Generator | None = None) -> GHN:
    """A copy of `meta` with node-state size `hid`, a multiple of ``meta.config.hid``.

    Args:
        meta: the trained meta-model (left unchanged).
        hid: the new node-state size; every width that scales with it grows by the same
            factor ``r = hid / meta.config.hid``.
        noise: standard deviation of the Gaussian noise added to every grown tensor, relative
            to that tensor's own standard deviation (0 keeps the predictions exactly).
        generator: random source of the noise (default: torch's global one).

    Raises:
        ValueError: `hid` is not a multiple of the current size larger than it, or `noise`
            is negative.
    """
    old = meta.config.hid
    if hid <= old or hid % old:
        raise ValueError(f"widen: hid must be a multiple of the meta-model's hid={old} larger than it "
                         f"(e.g. {2 * old}), got {hid}")
    if noise < 0:
        raise ValueError(f"widen: noise must be 0 or more, got {noise}")
    r = hid // old
    p = next(meta.parameters())
    big = GHN(dataclasses.replace(meta.config, hid=hid), decode_budget=meta.decode_budget).to(p.device, p.dtype)
    small = dict(meta.named_parameters())
    with torch.no_grad():
        for mod_name, module in big.named_modules():
            reads = isinstance(module, (nn.Linear, nn.GRUCell))  # their weights' axis 1 is an input
            for name, param in module.named_parameters(recurse=False):
                full = f"{mod_name}.{name}" if mod_name else name
                src = small[full]
                grown = src
                for axis, (n_new, n_old) in enumerate(zip(param.shape, src.shape)):
                    if n_new == n_old:
                        continue
                    if n_new != r * n_old:  # only hid differs, so every other width is unchanged
                        raise AssertionError(f"widen: {full} axis {axis} grows {n_old} -> {n_new}, not x{r}")
                    grown = grown.repeat_interleave(r, dim=axis)
                    if reads and name.startswith("weight") and axis == 1:
                        grown = grown / r
                if grown is not src and noise:
                    grown = grown + noise * src.std(unbiased=False) * torch.randn(grown.shape, generator=generator).to(grown)
                param.copy_(grown)
    big.train(meta.training)
    return big
