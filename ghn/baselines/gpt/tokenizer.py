"""Parameter vectors ↔ normalised token sequences.

Each tensor of the network (conv1, conv2, fc weight, fc bias) is normalised with its own
mean and standard deviation measured over the checkpoint data set. Two layouts cut the
normalised vector into tokens of ``token_size`` values (shorter groups are zero-padded):

- ``"chunks"`` (G.pt's): each tensor flattened and cut into chunks of ``chunk_size``
  values, a token never mixing two tensors. With chunk size 144: 3 + 32 + 3 + 1 = 39
  tokens, each its own type and position.
- ``"units"``: one token per hidden unit. conv1 unit i holds its filter (27 values);
  conv2 unit j holds its filter and the fc weights reading it (144 + 10), so the
  parameters that a unit's features decide travel with it; one token holds the fc bias.
  49 tokens of 154 values. All conv2 units share one type and one position, so a model
  built on this layout is equivariant to permutations of conv2's units: a run teaches it
  32 examples of how a unit and its read-out move instead of one example of 32 chunks.
  conv1 units have their own positions, because conv2's filters list their inputs in
  conv1's order.

A token's *type* selects its encoder and decoder, its *position* its learned embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ghn.baselines.gpt.cnn import NUM_PARAMS, PARAM_SHAPES, unflatten_params

LAYOUTS = ("chunks", "units")


def chunk_groups(shapes: dict[str, tuple[int, ...]], chunk_size: int) -> list[tuple[list[int], int, int]]:
    """Tokens of the "chunks" layout: (flat indices, type, position) per token."""
    groups, start = [], 0
    for shape in shapes.values():
        n = math.prod(shape)
        for j in range(start, start + n, chunk_size):
            t = len(groups)
            groups.append((list(range(j, min(j + chunk_size, start + n))), t, t))
        start += n
    return groups


def unit_groups(shapes: dict[str, tuple[int, ...]]) -> list[tuple[list[int], int, int]]:
    """Tokens of the "units" layout for the tiny CNN: (flat indices, type, position)."""
    if shapes != PARAM_SHAPES:
        raise ValueError(f"the 'units' layout is defined for the tiny CNN's tensors {PARAM_SHAPES}, got {shapes}")
    idx = unflatten_params(torch.arange(NUM_PARAMS))  # each tensor's flat indices, in its shape
    conv1, conv2, fc_w = idx["conv1.weight"], idx["conv2.weight"], idx["fc.weight"]
    groups = [(conv1[i].flatten().tolist(), 0, i) for i in range(conv1.shape[0])]
    # conv2 unit j with the fc weights reading it (fc.weight[:, j]); one type, one position.
    groups += [(conv2[j].flatten().tolist() + fc_w[:, j].tolist(), 1, conv1.shape[0]) for j in range(conv2.shape[0])]
    groups.append((idx["fc.bias"].tolist(), 2, conv1.shape[0] + 1))
    return groups


class ParamTokenizer(nn.Module):
    """Per-tensor normalisation and tokenisation of flat parameter vectors [B, D].

    ``layout``: "chunks" (``chunk_size`` values per token) or "units" (one token per
    hidden unit; ``chunk_size`` unused). See the module docstring.
    """

    def __init__(self, chunk_size: int = 144, shapes: dict[str, tuple[int, ...]] = PARAM_SHAPES, layout: str = "chunks") -> None:
        super().__init__()
        if layout == "chunks":
            groups = chunk_groups(shapes, chunk_size)
        elif layout == "units":
            groups = unit_groups(shapes)
        else:
            raise ValueError(f"unknown token layout {layout!r}; expected one of {LAYOUTS}")
        sizes = [math.prod(s) for s in shapes.values()]
        num_params = sum(sizes)
        self.token_size = max(len(idx) for idx, _, _ in groups)
        # gather[p] = which element of the padded vector goes to token slot p; index
        # ``num_params`` is a zero pad. scatter[i] = slot of element i (its inverse).
        gather = [i for idx, _, _ in groups for i in idx + [num_params] * (self.token_size - len(idx))]
        gather_t = torch.tensor(gather)
        scatter = torch.empty(num_params, dtype=torch.long)
        real = gather_t < num_params
        if sorted(gather_t[real].tolist()) != list(range(num_params)):
            raise AssertionError("token layout must hold every parameter exactly once")
        scatter[gather_t[real]] = torch.nonzero(real).squeeze(1)
        self.register_buffer("gather", gather_t, persistent=False)
        self.register_buffer("scatter", scatter, persistent=False)
        self.register_buffer("token_type", torch.tensor([t for _, t, _ in groups]), persistent=False)
        self.register_buffer("token_pos", torch.tensor([p for _, _, p in groups]), persistent=False)
        self.register_buffer("tensor_of_param", torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)), persistent=False)
        # Statistics are learned from data by ``fit`` and saved with the model.
        self.register_buffer("mean", torch.zeros(len(sizes)))
        self.register_buffer("std", torch.ones(len(sizes)))
        self.num_params = num_params

    @property
    def num_tokens(self) -> int:
        return self.token_type.numel()

    @torch.no_grad()
    def fit(self, params: torch.Tensor) -> ParamTokenizer:
        """Set per-tensor mean and std from data set params [N, D]."""
        for t in range(self.mean.numel()):
            vals = params[:, self.tensor_of_param == t].double()
            self.mean[t] = vals.mean()
            self.std[t] = vals.std().clamp_min(1e-8)
        return self

    def normalize(self, flat: torch.Tensor) -> torch.Tensor:
        """[B, D] raw params → [B, D] normalised."""
        return (flat - self.mean[self.tensor_of_param]) / self.std[self.tensor_of_param]

    def denormalize(self, flat: torch.Tensor) -> torch.Tensor:
        """[B, D] normalised → [B, D] raw params."""
        return flat * self.std[self.tensor_of_param] + self.mean[self.tensor_of_param]

    def chunk(self, flat: torch.Tensor) -> torch.Tensor:
        """[B, D] → tokens [B, T, token_size] (zero padding at the end of short tokens)."""
        padded = torch.cat([flat, flat.new_zeros(flat.shape[0], 1)], dim=1)
        return padded[:, self.gather].view(flat.shape[0], self.num_tokens, self.token_size)

    def unchunk(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, token_size] → [B, D]; padding slots are dropped."""
        return tokens.reshape(tokens.shape[0], -1)[:, self.scatter]
