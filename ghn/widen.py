"""Grow a trained meta-model, keeping what it predicts: a larger node state, a wider decoder.

Node states (``hid``): Net2Net-style widening (Chen et al., 2016): unit ``j`` of every layer
whose width scales with ``hid`` becomes ``r`` copies (``repeat_interleave``), and every
weight that reads such a layer splits its input columns evenly across the copies, so the
wider model computes the same function. That holds through the whole GHN: sums of messages,
the GRU (its gate blocks stay contiguous under ``repeat_interleave``) and layer norm (copies
keep the mean and the variance). Exact copies would stay copies under training (their
gradients are proportional, which Adam normalises away), so a little noise on the copied
weights breaks the tie.

Decoder features (``dec_hid``): the weight decoder writes every weight block as a linear
combination of ``dec_hid`` learned ``C_max x C_max`` matrices per kernel position, so all the
weights it can predict lie in a ``dec_hid``-dimensional space per position, whatever ``hid``
is. Growing it adds matrices (random, at the scale of the trained ones) whose coefficients
start at exactly zero, so predictions are unchanged and the new coefficients learn first.

    big = widen(meta, hid=64)       # meta.config.hid == 32; big predicts (almost) what meta does
    big = widen(meta, dec_hid=128)  # meta.config.dec_hid == 32; big predicts exactly what meta does
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ghn.model import GHN


def widen(meta: GHN, hid: int | None = None, noise: float = 1e-2, generator: torch.Generator | None = None,
          dec_hid: int | None = None) -> GHN:
    """A copy of `meta` with node-state size `hid` and/or decoder feature size `dec_hid`.

    Args:
        meta: the trained meta-model (left unchanged).
        hid: the new node-state size, a multiple of ``meta.config.hid`` (None: unchanged);
            every width that scales with it grows by the same factor ``r = hid / meta.config.hid``.
        noise: standard deviation of the Gaussian noise added to every tensor grown with
            `hid`, relative to that tensor's own standard deviation (0 keeps the predictions
            exactly). Growing `dec_hid` needs none: it keeps the predictions exactly.
        generator: random source of the noise and of the new decoder matrices (default:
            torch's global one).
        dec_hid: the new size of the weight decoder's features, larger than
            ``meta.config.dec_hid`` (None: unchanged).

    Raises:
        ValueError: `hid` is not a multiple of the current size larger than it, `dec_hid` is
            not larger than the current one, neither is given, or `noise` is negative.
    """
    if hid is None and dec_hid is None:
        raise ValueError("widen: give hid, dec_hid or both")
    if dec_hid is not None and dec_hid <= meta.config.dec_hid:
        raise ValueError(f"widen: dec_hid must be larger than the meta-model's dec_hid={meta.config.dec_hid}, "
                         f"got {dec_hid}")
    if noise < 0:
        raise ValueError(f"widen: noise must be 0 or more, got {noise}")
    big = meta if hid is None else _widen_hid(meta, hid, noise, generator)
    return big if dec_hid is None else _widen_decoder(big, dec_hid, generator)


def _widen_hid(meta: GHN, hid: int, noise: float, generator: torch.Generator | None) -> GHN:
    old = meta.config.hid
    if hid <= old or hid % old:
        raise ValueError(f"widen: hid must be a multiple of the meta-model's hid={old} larger than it "
                         f"(e.g. {2 * old}), got {hid}")
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


def _widen_decoder(meta: GHN, dec_hid: int, generator: torch.Generator | None) -> GHN:
    """A copy of `meta` whose weight decoder has `dec_hid` features (more than now)."""
    old = meta.config.dec_hid
    p = next(meta.parameters())
    big = GHN(dataclasses.replace(meta.config, dec_hid=dec_hid), decode_budget=meta.decode_budget).to(p.device, p.dtype)
    state = meta.state_dict()
    dec = meta.weight_decoder
    last = "weight_decoder.spatial.2"  # the MLP's output layer: kh * kw * dec_hid features
    for name in ("weight", "bias"):
        w = state[f"{last}.{name}"]
        w = w.view(dec.kh * dec.kw, old, *w.shape[1:])
        zeros = w.new_zeros(w.shape[0], dec_hid - old, *w.shape[2:])  # new features start at 0
        state[f"{last}.{name}"] = torch.cat([w, zeros], dim=1).flatten(0, 1)
    c = state["weight_decoder.channels"]
    new = torch.randn(*c.shape[:2], dec_hid - old, generator=generator).to(c) * c.std(unbiased=False)
    state["weight_decoder.channels"] = torch.cat([c, new], dim=2)
    big.load_state_dict(state)
    big.train(meta.training)
    return big
