"""Torch function calls as graph ops: which names move data, compute, or make constants,
and where each op keeps its weight, bias, groups and dilation among its arguments."""

from __future__ import annotations

from typing import Any

import torch


_ACT_OF: dict[str, str] = {
    **dict.fromkeys(("relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_"), "relu"),
    **dict.fromkeys(("gelu",), "gelu"),
    **dict.fromkeys(("silu", "silu_"), "silu"),
    **dict.fromkeys(("sigmoid", "sigmoid_"), "sigmoid"),
    **dict.fromkeys(("hardswish", "hardswish_"), "hardswish"),
    **dict.fromkeys(("hardsigmoid", "hardsigmoid_"), "hardsigmoid"),
    **dict.fromkeys(("tanh", "tanh_"), "tanh"),
    **dict.fromkeys(("softmax", "log_softmax", "_softmax"), "softmax"),
    **dict.fromkeys(("elu", "elu_", "selu", "celu", "mish", "softplus", "rrelu"), "other"),
}
# Ops that move or reshape data without computing: the output stays the input's node.
_PASS = frozenset(
    "view view_as reshape reshape_as permute transpose transpose_ t flatten unflatten contiguous "
    "expand expand_as squeeze squeeze_ unsqueeze unsqueeze_ clone detach to float half double "
    "type type_as chunk split unbind narrow select __getitem__ movedim swapaxes roll flip pad "
    "masked_fill masked_fill_ stochastic_depth requires_grad_ cpu cuda pixel_shuffle "
    "pixel_unshuffle channel_shuffle native_channel_shuffle repeat tile abs neg __neg__ "
    "clamp clamp_ clip exp log sqrt rsqrt pow __pow__ square normalize zero_ fill_".split()
)
# Ops whose outputs are new constants even when called on a graph tensor.
_CONST = frozenset(
    "new_zeros new_ones new_empty new_full new_tensor zeros_like ones_like empty_like full_like "
    "rand_like randn_like randint_like bernoulli bernoulli_ arange size dim numel __len__ "
    "__setitem__ __get__ __bool__ __int__ __float__ __index__ item tolist eq ne lt le gt ge "
    "__eq__ __ne__ __lt__ __le__ __gt__ __ge__ isfinite isnan any all argmax argmin".split()
)
_DROPOUT = frozenset(
    "dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout".split()
)
_SUM = frozenset("add add_ __add__ __iadd__ __radd__ sub sub_ __sub__ __isub__ __rsub__".split())
_MUL = frozenset(
    "mul mul_ __mul__ __imul__ __rmul__ div div_ __truediv__ __itruediv__ __rtruediv__ addcmul".split()
)
_CAT = frozenset(("cat", "concat", "concatenate", "stack", "hstack", "vstack"))
_INDEX = frozenset(("__getitem__", "index_select", "gather", "take", "embedding_bag"))
_MATMUL = frozenset(("matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "einsum", "baddbmm", "addmm"))
_NORM = {"batch_norm": "bn", "layer_norm": "ln", "group_norm": "gn", "instance_norm": "in", "rms_norm": "ln"}
_CONV = frozenset(
    "conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d convolution".split()
)


def _is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Tensors inside nested lists, tuples (named too) and dicts; faster than pytree here."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in _tensors(x)]
    if isinstance(obj, dict):
        return [t for x in obj.values() for t in _tensors(x)]
    return []


def _tensor_index(args) -> bool:
    """Advanced indexing with an index tensor (``table[index]``), not slicing."""
    return bool(_tensors(args[1:]))


def _arg(args, kwargs, i: int, key: str, default=None):
    return args[i] if len(args) > i else kwargs.get(key, default)


# Positions of (dilation, groups) in each convolution's signature: the transposed ones put
# output_padding before groups, and torch.convolution has transposed/output_padding between.
_CONV_DIL_GROUPS: dict[str, tuple[int, int]] = {
    **dict.fromkeys(("conv1d", "conv2d", "conv3d"), (5, 6)),  # (x, w, b, stride, padding, dilation, groups)
    # (x, w, b, stride, padding, output_padding, groups, dilation)
    **dict.fromkeys(("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"), (7, 6)),
    # (x, w, b, stride, padding, dilation, transposed, output_padding, groups)
    "convolution": (5, 8),
}


def _conv_op(name: str, args, kwargs) -> str:
    """Op type of a call to the convolution `name` (one of `_CONV`): grouped, dilated or plain."""
    weight = _arg(args, kwargs, 1, "weight")
    dil_at, groups_at = _CONV_DIL_GROUPS[name]
    groups = _arg(args, kwargs, groups_at, "groups", 1)
    dilation = _arg(args, kwargs, dil_at, "dilation", 1)
    if isinstance(groups, int) and groups > 1:
        return "dw_conv"
    dil = dilation if isinstance(dilation, (tuple, list)) else (dilation,)
    if any(isinstance(d, int) and d > 1 for d in dil) and weight is not None and weight.shape[-1] > 1:
        return "dil_conv"
    return "conv"


def _weight_bias(name: str, args, kwargs):
    if name in ("batch_norm", "instance_norm"):  # (input, running_mean, running_var, weight, bias, ...)
        return _arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 4, "bias")
    if name in ("layer_norm", "group_norm"):  # (input, shape/groups, weight, bias, eps)
        return _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    if name == "rms_norm":
        return _arg(args, kwargs, 2, "weight"), None
    if name == "embedding":  # (input, weight, ...)
        return _arg(args, kwargs, 1, "weight"), None
    if name == "addmm":  # (bias, input, weight)
        return args[2], args[0]
    return _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")


_MHA_ARGS = (
    "query key value embed_dim_to_check num_heads in_proj_weight in_proj_bias bias_k bias_v "
    "add_zero_attn dropout_p out_proj_weight out_proj_bias training key_padding_mask need_weights "
    "attn_mask use_separate_proj_weight q_proj_weight k_proj_weight v_proj_weight"
).split()


def _bind_mha(args, kwargs) -> dict[str, Any]:
    bound = dict(zip(_MHA_ARGS, args))
    bound.update(kwargs)
    return {k: bound.get(k) for k in _MHA_ARGS}
