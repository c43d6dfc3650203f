"""The tiny CIFAR-10 CNN whose checkpoints G.pt models, and parameter-vector helpers.

A parameter vector ("flat params") is the concatenation of the network's tensors in
``PARAM_SHAPES`` order, shape ``[D]`` with ``D = 5370``, or ``[N, D]`` for a batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ghn.data import CIFAR10_MEAN, CIFAR10_STD

# Name and shape of every tensor, in state-dict order. conv1 has stride 2.
PARAM_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (16, 3, 3, 3),
    "conv2.weight": (32, 16, 3, 3),
    "fc.weight": (10, 32),
    "fc.bias": (10,),
}
NUM_PARAMS: int = sum(math.prod(s) for s in PARAM_SHAPES.values())


class TinyCNN(nn.Module):
    """conv3x3 s2 3→16 (no bias), ReLU, conv3x3 16→32 (no bias), ReLU, GAP, linear 32→10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=1, padding=1, bias=False)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: [B, 3, 32, 32] normalised images → logits [B, 10]."""
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


def flatten_params(model: TinyCNN) -> torch.Tensor:
    """The model's parameters as one vector [D] (detached copy)."""
    sd = model.state_dict()
    return torch.cat([sd[k].reshape(-1) for k in PARAM_SHAPES]).detach().clone()


def unflatten_params(flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split flat params [..., D] into named tensors [..., *shape] (views)."""
    if flat.shape[-1] != NUM_PARAMS:
        raise ValueError(f"expected last dim {NUM_PARAMS}, got {tuple(flat.shape)}")
    out, i = {}, 0
    for name, shape in PARAM_SHAPES.items():
        n = math.prod(shape)
        out[name] = flat[..., i : i + n].reshape(*flat.shape[:-1], *shape)
        i += n
    return out


def load_flat_params(model: TinyCNN, flat: torch.Tensor) -> TinyCNN:
    """Copy a flat parameter vector [D] into ``model`` (strict) and return it."""
    model.load_state_dict({k: v.clone() for k, v in unflatten_params(flat).items()}, strict=True)
    return model


def random_init(seed: int) -> torch.Tensor:
    """Flat params [D] of a PyTorch-default-initialised TinyCNN, reproducible from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return flatten_params(TinyCNN())


def functional_logits(flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """TinyCNN forward with parameters given as a flat vector [D]: x [B, 3, 32, 32] → [B, 10]."""
    p = unflatten_params(flat)
    h = F.relu(F.conv2d(x, p["conv1.weight"], stride=2, padding=1))
    h = F.relu(F.conv2d(h, p["conv2.weight"], padding=1))
    return F.linear(h.mean(dim=(2, 3)), p["fc.weight"], p["fc.bias"])


@torch.no_grad()
def evaluate_params(
    flat: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and error rate of each of M networks on the same images.

    ``flat``: [M, D]; ``images``: [N, 3, 32, 32] normalised; ``labels``: [N].
    Returns (loss [M], error [M]); non-finite params give non-finite losses.
    """
    loss_sum = torch.zeros(flat.shape[0], dtype=torch.float64)
    wrong = torch.zeros(flat.shape[0], dtype=torch.float64)
    for j in range(0, images.shape[0], batch_size):
        # channels_last makes these small forward-only convolutions ~3x faster on CPU
        # (grouped convolutions over all M networks at once were slower still).
        x = images[j : j + batch_size].contiguous(memory_format=torch.channels_last)
        y = labels[j : j + batch_size]
        for m in range(flat.shape[0]):
            logits = functional_logits(flat[m].float(), x)
            loss_sum[m] += F.cross_entropy(logits, y, reduction="sum").item()
            wrong[m] += (logits.argmax(1) != y).sum().item()
    n = images.shape[0]
    return (loss_sum / n).float(), (wrong / n).float()


def _take(x: torch.Tensor, perm: torch.Tensor, dim: int) -> torch.Tensor:
    """Reorder ``x`` [N, ...] along ``dim`` with a separate permutation per row, perm [N, k]."""
    view = [perm.shape[0]] + [1] * (x.dim() - 1)
    view[dim] = perm.shape[1]
    return torch.gather(x, dim, perm.view(view).expand(x.shape))


def permute_hidden(flat: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly permute the hidden units of networks; their functions are unchanged.

    Permuting conv1's output channels (with conv2's matching input channels) and conv2's
    output channels (with the linear layer's matching inputs) maps a network to an
    equivalent one, so this multiplies the training data for free.
    ``flat``: [N, D] or [N, M, D] → same shape; one random permutation per row n, shared
    by the M vectors of that row (e.g. a start and a future checkpoint of one run).
    """
    x = flat if flat.dim() == 3 else flat.unsqueeze(1)
    n = x.shape[0]
    p = unflatten_params(x)  # tensors [N, M, *shape]
    p1 = torch.argsort(torch.rand(n, 16, generator=generator, device=flat.device), dim=1)
    p2 = torch.argsort(torch.rand(n, 32, generator=generator, device=flat.device), dim=1)
    w1 = _take(p["conv1.weight"], p1, 2)
    w2 = _take(_take(p["conv2.weight"], p2, 2), p1, 3)
    fw = _take(p["fc.weight"], p2, 3)
    out = torch.cat([w1.flatten(2), w2.flatten(2), fw.flatten(2), p["fc.bias"]], dim=2)
    return out if flat.dim() == 3 else out.squeeze(1)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images [N, 3, H, W] → float [N, 3, H, W], standardised like ``ghn.data`` loaders."""
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std
