"""Parameter vectors ↔ normalised token sequences.

Each tensor of the network (conv1, conv2, fc weight, fc bias) is normalised with its own
mean and standard deviation measured over the checkpoint data set, flattened and cut into
chunks of ``chunk_size`` values; a tensor's last chunk is zero-padded so that a token
never mixes two layers. With chunk size 144 the tiny CNN gives 3 + 32 + 3 + 1 = 39 tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ghn.baselines.gpt.cnn import PARAM_SHAPES


class ParamTokenizer(nn.Module):
    """Per-tensor normalisation and chunking of flat parameter vectors [B, D]."""

    def __init__(self, chunk_size: int = 144, shapes: dict[str, tuple[int, ...]] = PARAM_SHAPES) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        sizes = [math.prod(s) for s in shapes.values()]
        num_params = sum(sizes)
        # gather[p] = which element of the padded vector goes to token slot p; index
        # ``num_params`` is a zero pad. scatter[i] = slot of element i (its inverse).
        gather, tensor_of_token, start = [], [], 0
        for t, n in enumerate(sizes):
            n_tok = math.ceil(n / chunk_size)
            gather += list(range(start, start + n)) + [num_params] * (n_tok * chunk_size - n)
            tensor_of_token += [t] * n_tok
            start += n
        gather_t = torch.tensor(gather)
        scatter = torch.empty(num_params, dtype=torch.long)
        real = gather_t < num_params
        scatter[gather_t[real]] = torch.nonzero(real).squeeze(1)
        self.register_buffer("gather", gather_t, persistent=False)
        self.register_buffer("scatter", scatter, persistent=False)
        self.register_buffer("tensor_of_token", torch.tensor(tensor_of_token), persistent=False)
        self.register_buffer("tensor_of_param", torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)), persistent=False)
        # Statistics are learned from data by ``fit`` and saved with the model.
        self.register_buffer("mean", torch.zeros(len(sizes)))
        self.register_buffer("std", torch.ones(len(sizes)))
        self.num_params = num_params

    @property
    def num_tokens(self) -> int:
        return self.tensor_of_token.numel()

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
        """[B, D] → tokens [B, T, chunk_size] (zero padding at the end of each tensor)."""
        padded = torch.cat([flat, flat.new_zeros(flat.shape[0], 1)], dim=1)
        return padded[:, self.gather].view(flat.shape[0], self.num_tokens, self.chunk_size)

    def unchunk(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, chunk_size] → [B, D]; padding slots are dropped."""
        return tokens.reshape(tokens.shape[0], -1)[:, self.scatter]

