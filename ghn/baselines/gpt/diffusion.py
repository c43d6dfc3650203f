"""Gaussian diffusion over normalised parameter vectors, with a clean-target (x0) denoiser.

The denoiser is any callable ``denoise(x_t [B, D], t [B]) -> x0_hat [B, D]`` (conditioning
is bound into it by the caller). Sampling: ancestral DDPM over all steps, or deterministic
DDIM over a few evenly spaced steps (one step = a single x0 prediction from pure noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class DiffusionConfig:
    num_steps: int = 1000
    schedule: str = "cosine"  # "cosine" (Nichol & Dhariwal) or "linear" (Ho et al.)


def make_betas(cfg: DiffusionConfig) -> torch.Tensor:
    """Noise schedule betas [num_steps] (float64)."""
    n = cfg.num_steps
    if cfg.schedule == "linear":
        return torch.linspace(1e-4 * 1000 / n, 0.02 * 1000 / n, n, dtype=torch.float64)
    if cfg.schedule == "cosine":
        s = torch.arange(n + 1, dtype=torch.float64) / n
        abar = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


class GaussianDiffusion(nn.Module):
    """Forward noising q(x_t | x_0), the x0-regression loss and the two samplers."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        betas = make_betas(cfg)
        abar = torch.cumprod(1 - betas, dim=0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        for name, val in {
            "betas": betas,
            "abar": abar,
            "abar_prev": abar_prev,
            # Posterior q(x_{t-1} | x_t, x_0) = N(c0 * x0 + ct * x_t, var).
            "post_c0": betas * abar_prev.sqrt() / (1 - abar),
            "post_ct": (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar),
            "post_var": betas * (1 - abar_prev) / (1 - abar),
        }.items():
            self.register_buffer(name, val.float(), persistent=False)

    @property
    def num_steps(self) -> int:
        return self.cfg.num_steps

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noised x_t [B, D] from x0 [B, D] at steps t [B]."""
        a = self.abar[t].unsqueeze(1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def loss(self, denoise: Denoiser, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean squared error of the predicted clean params at uniformly drawn steps (scalar)."""
        t = torch.randint(self.num_steps, (x0.shape[0],), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        return (denoise(self.q_sample(x0, t, noise), t) - x0).square().mean()

    @torch.no_grad()
    def ddpm_sample(self, denoise: Denoiser, shape: tuple[int, int], generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sampling through all ``num_steps`` steps → x0 [B, D]."""
        x = torch.randn(shape, generator=generator, device=self.betas.device)
        for i in reversed(range(self.num_steps)):
            t = torch.full((shape[0],), i, dtype=torch.long, device=x.device)
            x0 = denoise(x, t)
            x = self.post_c0[i] * x0 + self.post_ct[i] * x
            if i > 0:
                x = x + self.post_var[i].sqrt() * torch.randn(shape, generator=generator, device=x.device)
        return x

    @torch.no_grad()
    def ddim_sample(
        self, denoise: Denoiser, shape: tuple[int, int], steps: int = 10, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) over ``steps`` evenly spaced steps → x0 [B, D]."""
        ts = torch.linspace(self.num_steps - 1, 0, steps).round().long().tolist()
        x = torch.randn(shape, generator=generator, device=self.betas.device)
        for k, i in enumerate(ts):
            x0 = denoise(x, torch.full((shape[0],), i, dtype=torch.long, device=x.device))
            if k == len(ts) - 1:
                return x0
            a, a_next = self.abar[i], self.abar[ts[k + 1]]
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return x
