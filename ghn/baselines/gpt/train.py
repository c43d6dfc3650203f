"""Training loop for G.pt: AdamW, warm-up + cosine schedule, EMA, atomic checkpoints, resume.

Files in ``out_dir``::

    state.pt            everything needed to resume (weights, EMA, optimiser, RNG, step,
                        training time so far)
    ema.safetensors     the EMA weights + model config, for sampling (``load_gpt``)
    metrics.jsonl       one line per logging interval: step, mean loss, lr and ``time``,
                        the seconds of training up to that step, summed over resumes,
                        pauses (``kill -STOP``) left out

A run (re)started at step S first drops the metrics lines after S: a resumed run logs
those steps again, and a fresh run (S = 0) starts a fresh file.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ghn.atomic import atomic_write
from ghn.baselines.gpt.checkpoints import load_checkpoints
from ghn.baselines.gpt.cnn import permute_hidden
from ghn.baselines.gpt.model import GPT, GPTConfig, save_gpt
from ghn.machine import cpu_has_native_bf16
from ghn.overrides import from_mapping
from ghn.stopwatch import Stopwatch

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data_dir: str = "runs/gpt_sgd_checkpoints"
    out_dir: str = "runs/gpt_sgd"
    model: GPTConfig = field(default_factory=GPTConfig)
    steps: int = 6000
    batch_size: int = 64
    lr: float = 4e-4
    weight_decay: float = 0.01
    warmup: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    # Random hidden-unit permutation of every training pair (the same one for start and
    # future). Off by default: with it the model must learn the permutation-equivariant map
    # from any start to its future instead of the runs it has seen, which this transformer
    # does not manage at CPU scale. On 16 (init, final) pairs for 1,500 steps its error at
    # the highest noise level stayed at that of returning the start (0.997 vs 1.02; 0.034
    # without permutations), and trained on 128 SGD runs it moved seen inits to test loss
    # 2.39 instead of towards their own 1.86 (1.99 without).
    permute: bool = False
    # Probability that a pair starts at the initialisation (checkpoint 0) rather than at a
    # uniformly drawn checkpoint: one-step optimisation and prompt alignment both start
    # from fresh inits, which uniform sampling would show in only 1/K of the pairs.
    start_init_prob: float = 0.0
    log_every: int = 50
    ckpt_every: int = 500
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    # bfloat16 autocast for the forward pass (weights, optimiser and EMA stay float32). On a
    # CPU with AMX (Intel Xeon, 4th generation on) a step takes ~0.6x the time; on CPUs
    # without bf16 instructions it is emulated and 16-22x slower (AMD EPYC with AVX2; training
    # warns there). See benchmarks/bench_gpt_train.py.
    amp: bool = False

    @classmethod
    def from_dict(cls, d: dict | None) -> TrainConfig:
        """From YAML (with overrides). Raises ValueError naming unknown keys, here or in
        the ``model`` section and its subsections, and listing the known ones."""
        return from_mapping(cls, d)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _truncate_metrics(path: Path, step: int) -> float | None:
    """Keep the lines of the metrics file ``path`` logged at or before ``step``, one per
    step; return the last kept line's time (None without one).

    Also dropped: lines cut short by a kill, and lines that a later resume from an earlier
    checkpoint logged again (files written before this truncation existed); the later
    line of a step is the one of the run that continued.
    """
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    kept: list[tuple[dict, str]] = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec["step"] > step:
            continue
        while kept and kept[-1][0]["step"] >= rec["step"]:
            kept.pop()
        kept.append((rec, line))
    if len(kept) < len(lines):
        log.info("dropping %d lines of %s: after step %d, repeated or cut short", len(lines) - len(kept), path, step)
        atomic_write(path, lambda p: p.write_text("".join(f"{line}\n" for _, line in kept)))
    return kept[-1][0]["time"] if kept else None


def train(cfg: TrainConfig, resume: bool = False) -> GPT:
    """Train G.pt on the checkpoint data set in ``cfg.data_dir``; returns the EMA model."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    if cfg.amp and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("amp=true on a CPU without bfloat16 instructions (AVX512-BF16, AMX or Arm BF16): "
                    "autocast is emulated there, and a step took 16-22x as long as in float32 on an AMD EPYC "
                    "(benchmarks/bench_gpt_train.py measures it); set amp=false on this machine")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_checkpoints(cfg.data_dir).to(device)
    log.info("data: %d runs x %d checkpoints from %s", data.num_runs, data.params.shape[1], cfg.data_dir)

    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    model = GPT(cfg.model).to(device)
    start, future, _, _ = data.sample_pairs(4096, cfg.start_init_prob, gen)
    model.fit_normalization(data.params.flatten(0, 1), data.test_loss.flatten(), start, future)
    ema = copy.deepcopy(model).requires_grad_(False)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and name != "net.pos" else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    step, elapsed = 0, None
    state_path, metrics_path = out / "state.pt", out / "metrics.jsonl"
    if resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"].cpu())
        step, elapsed = state["step"], state.get("elapsed")
        log.info("resumed from %s at step %d", state_path, step)
    elif resume:
        log.info("no state in %s; starting from scratch", out)
    last_logged_time = _truncate_metrics(metrics_path, step)
    if elapsed is None:
        # A fresh run keeps no log lines, so starts at 0. A state.pt from before training
        # time was saved falls back to the last kept line's time, which in such runs counts
        # only from their latest resume (an underestimate).
        elapsed = last_logged_time or 0.0
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))

    def save() -> None:
        state = {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "opt": opt.state_dict(),
            "gen": gen.get_state(),
            "step": step,
            "elapsed": elapsed,
            "config": json.dumps(asdict(cfg)),
        }
        atomic_write(state_path, lambda p: torch.save(state, p))
        atomic_write(out / "ema.safetensors", lambda p: save_gpt(ema, p))

    model.train()
    run_loss, run_n = 0.0, 0
    # Training time carries over resumes and leaves out pauses (kill -STOP); time after the
    # last checkpoint of a crashed run is not counted.
    with (
        open(metrics_path, "a") as metrics,
        tqdm(total=cfg.steps, initial=step, desc="train G.pt", unit="step") as bar,
        Stopwatch() as watch,
    ):
        watch.start()
        while step < cfg.steps:
            start, future, loss_start, loss_target = data.sample_pairs(cfg.batch_size, cfg.start_init_prob, gen)
            if cfg.permute:
                pair = permute_hidden(torch.stack([start, future], dim=1), gen)  # same permutation for both
                start, future = pair[:, 0], pair[:, 1]
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                loss = model.loss(start, future, loss_start, loss_target, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                # Warm the EMA up so early checkpoints are not dominated by the random init.
                d = min(cfg.ema_decay, (1 + step) / (10 + step))
                torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)
            step += 1
            run_loss, run_n = run_loss + loss.item(), run_n + 1
            elapsed += watch.lap()
            bar.update()
            if step % cfg.log_every == 0 or step == cfg.steps:
                rec = {"step": step, "loss": run_loss / run_n, "lr": lr_at(cfg, step - 1), "time": elapsed}
                metrics.write(json.dumps(rec) + "\n")
                metrics.flush()
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
                run_loss, run_n = 0.0, 0
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                save()
    return ema.eval()
