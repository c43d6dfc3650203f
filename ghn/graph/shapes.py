"""Outputs of common ops on meta tensors computed from shapes alone.

Meta kernels run dtype and stride logic in Python and dominate tracing time; these
shortcuts cover the plain cases and return None otherwise, so the real kernel runs (and
raises its own errors)."""

from __future__ import annotations

from typing import Any

import torch

from ghn.graph.ops import _CAT, _CONV, _MUL, _SUM, _arg, _is_tensor


def _output(func, args, kwargs) -> Any:
    """``func(*args, **kwargs)``, computed from shapes alone when one of the shortcuts below
    knows the op and its arguments (their meta kernels dominate tracing)."""
    name = func.__name__
    if name in _SUM or name in _MUL or name in _CAT:
        out = _shape_only(name, args, kwargs)
    elif name in _CONV:
        out = _conv_shape_only(name, args, kwargs)
    elif "pool" in name:
        out = _pool_shape_only(name, args, kwargs)
    else:
        out = None
    return func(*args, **kwargs) if out is None else out


def _shape_only(name: str, args, kwargs) -> torch.Tensor | None:
    """Output of a sum, product or concatenation of meta tensors from shapes alone: their
    meta kernels (dtype and stride logic in Python) dominate tracing. None when the call
    is not the plain case, and the real kernel runs instead."""
    if name in _CAT:
        if name == "stack" or not args or not isinstance(args[0], (list, tuple)):
            return None
        ts = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if not ts or any(not _is_tensor(t) or t.device.type != "meta" or t.dim() != ts[0].dim() for t in ts):
            return None
        if ts[0].dim() == 0 or any(t.dtype != ts[0].dtype for t in ts):
            return None
        shape = list(ts[0].shape)
        shape[dim] = sum(t.shape[dim] for t in ts)
        return torch.empty(shape, dtype=ts[0].dtype, device="meta")
    if len(args) < 2 or any(_is_tensor(t) for t in args[2:]) or not all(
        _is_tensor(t) and t.device.type == "meta" and t.is_floating_point() for t in args[:2]
    ):
        return None
    a, b = args[0], args[1]
    # torch.broadcast_shapes is slow Python; equal shapes are the common case.
    shape = a.shape if a.shape == b.shape else torch.broadcast_shapes(a.shape, b.shape)
    if name.endswith("_") and not name.startswith("__") or name.startswith("__i"):  # in place
        return a if shape == a.shape else None
    dtype = a.dtype if a.dtype == b.dtype else torch.promote_types(a.dtype, b.dtype)
    return torch.empty(shape, dtype=dtype, device="meta")


def _pair(x: Any, n: int) -> tuple[int, ...] | None:
    if isinstance(x, int):
        return (x,) * n
    if isinstance(x, (tuple, list)) and len(x) == n and all(isinstance(v, int) for v in x):
        return tuple(x)
    return None


def _window_out(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil: bool) -> int:
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:  # the last window must start inside the input
        out -= 1
    return out


def _conv_shape_only(name: str, args, kwargs) -> torch.Tensor | None:
    """Output of ``conv1d/2d/3d`` on a meta input from shapes alone (their meta kernels are
    the largest cost of tracing a convolutional network). None when not the plain case
    (transposed, string or odd padding, not meta), and the real kernel runs instead."""
    if name not in ("conv1d", "conv2d", "conv3d"):
        return None
    x, w = args[0], _arg(args, kwargs, 1, "weight")
    n = int(name[4])
    if not (_is_tensor(x) and _is_tensor(w) and x.device.type == "meta" and x.dim() in (n + 1, n + 2)):
        return None
    stride, dilation = (_pair(_arg(args, kwargs, i, key, 1), n) for i, key in ((3, "stride"), (5, "dilation")))
    pad = _pair(_arg(args, kwargs, 4, "padding", 0), n)
    if stride is None or dilation is None or pad is None or w.dim() != n + 2:
        return None
    spatial = x.shape[-n:]
    out = [_window_out(spatial[i], w.shape[2 + i], stride[i], pad[i], dilation[i], False) for i in range(n)]
    if min(out) < 1 or x.shape[-n - 1] != w.shape[1] * _arg(args, kwargs, 6, "groups", 1):
        return None  # let the kernel raise its own error
    return torch.empty((*x.shape[:-n - 1], w.shape[0], *out), dtype=x.dtype, device="meta")


def _pool_shape_only(name: str, args, kwargs) -> torch.Tensor | None:
    """Output of a 2-D max/avg pool or an adaptive average pool on a meta input, from
    shapes alone; None when not the plain case (then the real kernel runs)."""
    x = args[0] if args else kwargs.get("input")
    if not (_is_tensor(x) and x.device.type == "meta" and x.dim() in (3, 4)):
        return None
    if name == "adaptive_avg_pool2d":
        size = _pair(_arg(args, kwargs, 1, "output_size"), 2)
        return None if size is None else torch.empty((*x.shape[:-2], *size), dtype=x.dtype, device="meta")
    if name not in ("max_pool2d", "avg_pool2d"):
        return None
    if _arg(args, kwargs, 6, "return_indices" if name == "max_pool2d" else "divisor_override"):
        return None
    kernel = _pair(_arg(args, kwargs, 1, "kernel_size"), 2)
    stride = _pair(_arg(args, kwargs, 2, "stride", None) or kernel, 2)
    pad = _pair(_arg(args, kwargs, 3, "padding", 0), 2)
    if name == "max_pool2d":
        dilation, ceil = _pair(_arg(args, kwargs, 4, "dilation", 1), 2), _arg(args, kwargs, 5, "ceil_mode", False)
    else:
        dilation, ceil = (1, 1), _arg(args, kwargs, 4, "ceil_mode", False)
    if kernel is None or stride is None or pad is None or dilation is None or not isinstance(ceil, bool):
        return None
    out = [_window_out(x.shape[-2 + i], kernel[i], stride[i], pad[i], dilation[i], ceil) for i in range(2)]
    if min(out) < 1 or any(2 * p > k for p, k in zip(pad, kernel)):
        return None
    return torch.empty((*x.shape[:-2], *out), dtype=x.dtype, device="meta")


def _mha_shape_only(a: dict[str, Any], kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Outputs of ``F.multi_head_attention_forward`` on meta tensors, from shapes alone:
    attention output of the query's shape, weights ``(B, L, S)`` averaged over heads or
    ``(B, H, L, S)`` (unbatched: without B), or None when not requested."""
    q, k = a["query"], a["key"]
    out = torch.empty(q.shape, dtype=q.dtype, device="meta")
    if a["need_weights"] is False:
        return out, None
    length, source = q.shape[0], k.shape[0]
    batch = (q.shape[1],) if q.dim() == 3 else ()
    heads = () if kwargs.get("average_attn_weights", True) else (a["num_heads"],)
    return out, torch.empty((*batch, *heads, length, source), dtype=q.dtype, device="meta")


def _same_shape(func, args, kwargs):
    """Run a shape-preserving op (activation, dropout) without its meta kernel."""
    x = args[0]
    if x.device.type == "meta" and func.__name__ not in ("softmax", "log_softmax", "_softmax"):
        return x.detach()
    return func(*args, **kwargs)
