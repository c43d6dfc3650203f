"""The one-call API and what users need to run predicted networks honestly.

Predicted networks come without running statistics for their batch-norm layers. Two
honest ways to evaluate them:

- `use_batch_stats(model)`: normalise with the statistics of each test batch, as the
  published GHN-2 code does (test batches of 64 or more);
- `calibrate_bn(model, batches)`: re-estimate running statistics on a few training
  batches, then evaluate in the usual eval mode.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ghn.model import GHN

log = logging.getLogger(__name__)


def default_meta_model(device: str | torch.device = "cpu") -> GHN:
    """The pretrained meta-model shipped inside the package (``ghn2-cifar10``).

    Raises:
        ghn.hub.MetaModelError: one of its subclasses when this installation is broken:
            `ModelNotShippedError` (also a LookupError) when the registry lacks the entry,
            `MissingFileError` when its files are missing, `CorruptWeightsError` or
            `ChecksumMismatchError` when the weights are damaged, `InvalidConfigError` when
            its config is unreadable. Reinstalling the package fixes each of them.
    """
    from ghn import hub  # the hub knows the registered names; imported lazily

    return hub.from_pretrained(hub.DEFAULT_MODEL, device=device)


def predict(
    model: nn.Module,
    meta_model: GHN | None = None,
    input_shape: Sequence[int] | None = None,
    input_dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Predict every trainable parameter of `model` in one forward pass of `meta_model`.

    Returns the same `model`, its parameters overwritten in place. Without a meta-model the
    default pretrained one is used. `input_shape` (no batch dimension) defaults to the
    meta-model's, ``(3, 32, 32)`` for CIFAR-10 meta-models; a model that takes token ids
    takes ``input_shape=(seq_len,), input_dtype=torch.long``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"predict expects a torch.nn.Module, got {type(model).__name__}")
    meta_model = meta_model if meta_model is not None else default_meta_model()
    return meta_model.predict(model, input_shape, input_dtype)


def functional_forward(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Run `model` on `x` with predicted `params` that keep their autograd graph, so a loss
    on the output back-propagates into the meta-model (the training path)."""
    return torch.func.functional_call(model, params, (x,))


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def use_batch_stats(model: nn.Module) -> nn.Module:
    """Make every batch-norm layer normalise with the current batch's statistics, also in
    eval mode (running statistics are dropped). Returns `model`."""
    for bn in _batch_norms(model):
        bn.track_running_stats = False
        bn.running_mean = bn.running_var = bn.num_batches_tracked = None
    return model


@torch.no_grad()
def calibrate_bn(model: nn.Module, batches: Iterable, num_batches: int = 20) -> nn.Module:
    """Re-estimate batch-norm running statistics from `num_batches` of `batches` (images,
    or (images, labels) pairs), as a cumulative average; leaves `model` in eval mode with
    each norm's original momentum.

    Works after `use_batch_stats` too (running buffers are recreated).

    Raises:
        ValueError: `num_batches` is not positive or `batches` is empty; `model` is then
            left untouched.
    """
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"calibrate_bn: num_batches must be a positive int, got {num_batches!r}")
    norms = _batch_norms(model)
    if not norms:
        return model.eval()
    # Peek at the first batch so that an empty loader fails before any statistics are reset.
    it = iter(batches)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError(
            "calibrate_bn: `batches` yielded no batch; pass a non-empty loader or list of batches"
        ) from None
    device = next(model.parameters()).device
    momenta = [bn.momentum for bn in norms]
    try:
        for bn in norms:
            if bn.running_mean is None:
                bn.register_buffer("running_mean", torch.zeros(bn.num_features, device=device))
                bn.register_buffer("running_var", torch.ones(bn.num_features, device=device))
                bn.register_buffer("num_batches_tracked", torch.tensor(0, device=device))
            bn.track_running_stats = True
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average over the calibration batches
        model.train()
        for batch in itertools.islice(itertools.chain([first], it), num_batches):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
    return model.eval()
