"""G.pt: the tokenizer, denoising transformer and diffusion process composed, plus I/O."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ghn.baselines.gpt.diffusion import DiffusionConfig, GaussianDiffusion
from ghn.baselines.gpt.tokenizer import ParamTokenizer
from ghn.baselines.gpt.transformer import CheckpointTransformer, TransformerConfig
from ghn.overrides import from_mapping


@dataclass
class GPTConfig:
    chunk_size: int = 64  # values per token in the "chunks" layout
    # "chunks" (G.pt's) or "units" (one token per hidden unit; see ghn.baselines.gpt.tokenizer).
    # Tokens must be at most half the transformer width (see GPT).
    tokens: str = "chunks"
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    # Classifier-free guidance (Ho & Salimans, 2022): in training, the prompted loss is
    # replaced by a learned "no prompt" embedding with this probability, which lets
    # GPT.sample(guidance=w) extrapolate along the prompt (w > 1). 0: no "no prompt" embedding.
    prompt_dropout: float = 0.0

    @classmethod
    def from_dict(cls, d: dict | None, section: str = "") -> GPTConfig:
        """From YAML or a saved model's metadata; missing keys take their defaults.

        Raises ValueError on unknown keys, here or in the nested sections; ``section`` is
        where ``d`` sits in a larger config (e.g. ``"model"``), for the message.
        """
        return from_mapping(cls, d, section)


class GPT(nn.Module):
    """Generative model of checkpoints: p(future params | start params, start loss, target loss).

    Works on raw flat parameter vectors [B, D] and raw test losses [B]; normalisation
    statistics come from the training data set via :meth:`fit_normalization`.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        # Each token carries a chunk of the noisy target and a chunk of the start. At middle
        # noise levels the preconditioned estimate (see _denoiser) passes the noise through
        # c_skip, and the transformer has to cancel it value by value, so a token must be
        # wide enough for both chunks: with width 32 and chunk 144, a model fitted to three
        # pairs returns them with 1-step DDIM (squared error 1% of the start's) but not with
        # 10-step DDIM or DDPM (70-85%; tests/test_gpt.py).
        if not 0.0 <= cfg.prompt_dropout < 1.0:
            raise ValueError(f"prompt_dropout must be in [0, 1), got {cfg.prompt_dropout!r}")
        tok = ParamTokenizer(cfg.chunk_size, layout=cfg.tokens)
        if cfg.transformer.width < 2 * tok.token_size:
            what = f"chunk_size {cfg.chunk_size}" if cfg.tokens == "chunks" else f"{cfg.tokens!r} layout"
            raise ValueError(
                f"transformer width {cfg.transformer.width} must be at least twice the token size {tok.token_size} ({what})"
            )
        self.cfg = cfg
        self.tokenizer = tok
        self.diffusion = GaussianDiffusion(cfg.diffusion)
        self.net = CheckpointTransformer(
            cfg.transformer, tok.token_type, tok.token_pos, tok.token_size, cfg.diffusion.num_steps,
            null_prompt=cfg.prompt_dropout > 0,
        )
        self.register_buffer("loss_mean", torch.zeros(()))
        self.register_buffer("loss_std", torch.ones(()))
        self.register_buffer("delta_std", torch.ones(()))

    @torch.no_grad()
    def fit_normalization(
        self, params: torch.Tensor, losses: torch.Tensor, start: torch.Tensor, future: torch.Tensor
    ) -> None:
        """Statistics from the data set: per-tensor parameter mean/std from params [N, D],
        loss mean/std from losses [N], and the typical size of an update (normalised) from
        sample training pairs start/future [M, D]."""
        self.tokenizer.fit(params)
        self.loss_mean.copy_(losses.double().mean())
        self.loss_std.copy_(losses.double().std().clamp_min(1e-8))
        delta = self.tokenizer.normalize(future) - self.tokenizer.normalize(start)
        self.delta_std.copy_(delta.double().std().clamp_min(1e-3))

    def _denoiser(
        self,
        start: torch.Tensor,
        loss_start: torch.Tensor,
        loss_target: torch.Tensor,
        drop_prompt: torch.Tensor | None = None,
        guidance: float = 1.0,
    ):
        """Bind the conditioning; returns denoise(x_t [B, D], t [B]) → x0 [B, D], all normalised.

        ``drop_prompt`` [B] (bool) replaces those rows' prompted loss with the "no prompt"
        embedding. ``guidance`` w != 1 evaluates each row with and without its prompt and
        returns F_none + w (F_prompt - F_none); x0 is affine in F, so this is guidance on x0
        (and, for a given x_t, on the predicted noise).

        The clean-parameter estimate is preconditioned as in EDM (Karras et al., 2022), with
        the start checkpoint as the prior mean: x0 = start + c_skip (x̃ - start) + c_out F,
        where x̃ = x_t / sqrt(abar) is the noisy target. At low noise the estimate is x̃
        itself and at high noise the start plus a learned update, so the transformer only
        supplies what neither knows. In between, c_skip lets part of the noise through and
        F has to remove it, which is why tokens must be at least two chunks wide.
        """
        tok = self.tokenizer
        start_n = tok.normalize(start)
        start_tokens = tok.chunk(start_n)
        ls = (loss_start - self.loss_mean) / self.loss_std
        lt = (loss_target - self.loss_mean) / self.loss_std
        sd2 = self.delta_std.square()

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            abar = self.diffusion.abar[t].unsqueeze(1)
            sigma2 = (1 - abar) / abar
            c_skip = sd2 / (sigma2 + sd2)
            c_out = (sigma2 * sd2 / (sigma2 + sd2)).sqrt()
            x_tokens = tok.chunk(x_t)
            if guidance == 1.0:
                f = tok.unchunk(self.net(x_tokens, start_tokens, t, ls, lt, drop_prompt))
            else:  # one pass over the batch twice: with the prompt, then without
                b = x_t.shape[0]
                drop = torch.arange(2 * b, device=x_t.device) >= b
                f_prompt, f_none = tok.unchunk(self.net(
                    torch.cat([x_tokens, x_tokens]), torch.cat([start_tokens, start_tokens]),
                    torch.cat([t, t]), torch.cat([ls, ls]), torch.cat([lt, lt]), drop)).chunk(2)
                f = f_none + guidance * (f_prompt - f_none)
            return start_n + c_skip * (x_t / abar.sqrt() - start_n) + c_out * f

        return denoise

    def loss(
        self,
        start: torch.Tensor,
        future: torch.Tensor,
        loss_start: torch.Tensor,
        loss_target: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Diffusion training loss (scalar) for start/future params [B, D] and losses [B].

        With ``cfg.prompt_dropout`` p > 0, each row's prompt is dropped with probability p."""
        x0 = self.tokenizer.normalize(future)
        drop = None
        if self.cfg.prompt_dropout > 0:
            drop = torch.rand(start.shape[0], device=start.device, generator=generator) < self.cfg.prompt_dropout
        return self.diffusion.loss(self._denoiser(start, loss_start, loss_target, drop), x0, generator)

    @torch.no_grad()
    def sample(
        self,
        start: torch.Tensor,
        loss_start: torch.Tensor,
        loss_target: torch.Tensor,
        method: str = "ddim",
        steps: int = 10,
        generator: torch.Generator | None = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """Sample future params [B, D] for start params [B, D] prompted with loss_target [B].

        ``method``: "ddpm" (all diffusion steps) or "ddim" (``steps`` deterministic steps).
        ``guidance``: classifier-free guidance scale; 1 samples the model as trained, w > 1
        follows the prompt more strongly at twice the cost per step. Raises ValueError for
        w != 1 on a model trained without ``prompt_dropout``.
        """
        if guidance != 1.0 and self.cfg.prompt_dropout == 0:
            raise ValueError(
                f"guidance={guidance} needs a model trained with prompt dropout (model.prompt_dropout > 0, "
                "e.g. 0.1); this one was trained without, so sample it with guidance=1"
            )
        denoise = self._denoiser(start, loss_start, loss_target, guidance=guidance)
        shape = (start.shape[0], self.tokenizer.num_params)
        if method == "ddpm":
            x0 = self.diffusion.ddpm_sample(denoise, shape, generator)
        elif method == "ddim":
            x0 = self.diffusion.ddim_sample(denoise, shape, steps, generator)
        else:
            raise ValueError(f"unknown sampler {method!r}")
        return self.tokenizer.denormalize(x0)


def save_gpt(model: GPT, path: str | Path) -> None:
    """Write weights and config to one safetensors file (caller handles atomicity)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"config": json.dumps(asdict(model.cfg))})


def load_gpt(path: str | Path, device: str | torch.device = "cpu") -> GPT:
    """Rebuild a GPT from a file written by :func:`save_gpt` (safetensors: no code execution)."""
    with safe_open(str(path), framework="pt") as f:
        cfg = GPTConfig.from_dict(json.loads(f.metadata()["config"]))
    model = GPT(cfg)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device).eval()
