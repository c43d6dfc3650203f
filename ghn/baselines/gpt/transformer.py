"""The G.pt denoiser: a transformer over parameter tokens with adaLN-Zero conditioning.

Token i carries token i of the noisy future parameters and token i of the starting
parameters (see :mod:`.tokenizer`). Each token *type* has its own linear encoder and decoder
(in the "chunks" layout every token is its own type: chunks of different layers mean
different things) and each *position* its own learned embedding; tokens sharing both are
interchangeable, which is what makes the "units" layout permutation-equivariant. The
diffusion step, the starting loss and the prompted target loss are embedded with Fourier
features and modulate every block (DiT's adaLN-Zero). A model trained with prompt dropout
also learns a "no prompt" embedding that stands in for the prompted loss's (classifier-free
guidance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class TransformerConfig:
    width: int = 192
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    fourier_dim: int = 128
    # Highest frequency of the loss embeddings, in radians per standard deviation of the
    # data set's losses (the lowest is 0.1). 100 resolves ~0.01 standard deviations; a lower
    # value gives a smoother function of the prompt.
    loss_max_freq: float = 100.0

    def __post_init__(self) -> None:
        if not self.loss_max_freq > 0.1:
            raise ValueError(f"loss_max_freq must be above the lowest frequency 0.1, got {self.loss_max_freq!r}")


class FourierEmbedding(nn.Module):
    """Scalar [B] → sin/cos features at geometrically spaced frequencies → MLP → [B, width]."""

    def __init__(self, dim: int, width: int, min_freq: float, max_freq: float) -> None:
        super().__init__()
        freqs = torch.exp(torch.linspace(math.log(min_freq), math.log(max_freq), dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arg = x.float().unsqueeze(1) * self.freqs
        return self.mlp(torch.cat([arg.sin(), arg.cos()], dim=1))


class TokenLinear(nn.Module):
    """A separate linear map per token type: [B, T, in] → [B, T, out], with ``token_type``
    [T] (values in [0, types)) choosing each token's map."""

    def __init__(self, token_type: torch.Tensor, d_in: int, d_out: int) -> None:
        super().__init__()
        types = int(token_type.max()) + 1
        self.weight = nn.Parameter(torch.randn(types, d_in, d_out) / math.sqrt(d_in))
        self.bias = nn.Parameter(torch.zeros(types, d_out))
        # Runs of consecutive tokens of one type, (first, end, type): the "units" layout has
        # three, and one matmul per run costs a third of gathering a weight copy per token
        # (and scattering its gradient back). When every token is its own type, in order
        # ("chunks"), the weights are already per token.
        self.per_token = bool(torch.equal(token_type, torch.arange(len(token_type))))
        bounds = [0] + [i for i in range(1, len(token_type)) if token_type[i] != token_type[i - 1]] + [len(token_type)]
        self.runs = [(a, b, int(token_type[a])) for a, b in zip(bounds[:-1], bounds[1:])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_token:
            return torch.einsum("bti,tio->bto", x, self.weight) + self.bias
        return torch.cat([x[:, a:b] @ self.weight[t] + self.bias[t] for a, b, t in self.runs], dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention, [B, H, T, D] → [B, H, T, D]. Under CPU autocast it runs
    in float32: the CPU's bfloat16 flash-attention backward took 6x as long as float32's
    (torch 2.14, Intel Xeon with AMX), while the linear layers around it gain 3x."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    return F.scaled_dot_product_attention(q, k, v)


class Block(nn.Module):
    """Pre-norm self-attention + MLP block whose norms and residual gates depend on c."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        w = cfg.width
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(w, 3 * w)
        self.proj = nn.Linear(w, w)
        self.norm2 = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        hidden = int(w * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(w, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, w))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(w, 6 * w))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: [B, T, W], c: [B, W] → [B, T, W]."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=1)
        b, t, w = x.shape
        q, k, v = self.qkv(modulate(self.norm1(x), shift1, scale1)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = attention(q, k, v).transpose(1, 2).reshape(b, t, w)
        x = x + gate1.unsqueeze(1) * self.proj(a)
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))


class CheckpointTransformer(nn.Module):
    """The learned part F of the clean-parameter estimate (see ``GPT._denoiser``).

    forward(x_t [B, T, C], start [B, T, C], t [B], loss_start [B], loss_target [B],
    drop_prompt [B] or None) → [B, T, C], with parameters and losses already normalised;
    ``token_type`` and ``token_pos`` [T] come from the tokenizer. Rows where ``drop_prompt``
    is true use the learned "no prompt" embedding (``null_prompt=True``) instead of
    loss_target's. The final layer starts at zero, so an untrained model adds nothing to
    the preconditioned estimate.
    """

    def __init__(
        self,
        cfg: TransformerConfig,
        token_type: torch.Tensor,
        token_pos: torch.Tensor,
        token_size: int,
        diffusion_steps: int,
        null_prompt: bool = False,
    ) -> None:
        super().__init__()
        w = cfg.width
        self.encode = TokenLinear(token_type, 2 * token_size, w)
        self.pos = nn.Parameter(torch.zeros(1, int(token_pos.max()) + 1, w))
        self.register_buffer("token_pos", token_pos.clone(), persistent=False)
        # Diffusion step in [0, steps): periods from 1 step to the whole range.
        self.t_embed = FourierEmbedding(cfg.fourier_dim, w, 2 * math.pi / diffusion_steps, 1.0)
        # Losses are z-scores: span ~10 standard deviations at the lowest frequency.
        self.loss_start_embed = FourierEmbedding(cfg.fourier_dim, w, 0.1, cfg.loss_max_freq)
        self.loss_target_embed = FourierEmbedding(cfg.fourier_dim, w, 0.1, cfg.loss_max_freq)
        self.null_prompt = nn.Parameter(torch.zeros(w)) if null_prompt else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(w, 2 * w))
        self.decode = TokenLinear(token_type, w, token_size)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.pos, std=0.02)
        # adaLN-Zero: every block starts as the identity and the update as zero.
        for blk in self.blocks:
            nn.init.zeros_(blk.ada[-1].weight)
            nn.init.zeros_(blk.ada[-1].bias)
        nn.init.zeros_(self.ada[-1].weight)
        nn.init.zeros_(self.ada[-1].bias)
        nn.init.zeros_(self.decode.weight)

    def forward(
        self,
        x_t: torch.Tensor,
        start: torch.Tensor,
        t: torch.Tensor,
        loss_start: torch.Tensor,
        loss_target: torch.Tensor,
        drop_prompt: torch.Tensor | None = None,
    ) -> torch.Tensor:
        prompt = self.loss_target_embed(loss_target)
        if drop_prompt is not None:
            if self.null_prompt is None:
                raise ValueError("this transformer has no 'no prompt' embedding (built with null_prompt=False)")
            prompt = torch.where(drop_prompt.unsqueeze(1), self.null_prompt, prompt)
        c = self.t_embed(t) + self.loss_start_embed(loss_start) + prompt
        x = self.encode(torch.cat([x_t, start], dim=2)) + self.pos[:, self.token_pos]
        for blk in self.blocks:
            x = blk(x, c)
        shift, scale = self.ada(c).chunk(2, dim=1)
        return self.decode(modulate(self.norm(x), shift, scale))
