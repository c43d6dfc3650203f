"""Tests of the G.pt baseline: real components at small sizes."""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ghn.baselines.gpt import (
    GPT,
    NUM_PARAMS,
    PARAM_SHAPES,
    CollectConfig,
    DiffusionConfig,
    GPTConfig,
    ParamTokenizer,
    TinyCNN,
    TransformerConfig,
    collect,
    load_checkpoints,
    load_flat_params,
    load_gpt,
    permute_hidden,
    random_init,
    save_gpt,
    unflatten_params,
)
from ghn.baselines.gpt.checkpoints import (
    CheckpointData,
    RunSpec,
    collect_shard,
    collection_data,
    shard_path,
    train_run,
    update_stats,
)
from ghn.baselines.gpt.one_step import one_step
from ghn.baselines.gpt.train import TrainConfig, train
from ghn.baselines.gpt.transformer import TokenLinear, attention
from ghn.data import cifar10_source
from ghn.data import CIFAR10NotFoundError
from ghn.overrides import load_config

ROOT = Path(__file__).resolve().parents[1]
# The module, not the function of the same name that ghn.baselines.gpt exports.
gpt_train = importlib.import_module("ghn.baselines.gpt.train")


def _script(name: str):
    """Import experiments/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module

# A tiny collection: a few hundred training images, short runs with a large Adam step
# (so checkpoints move far from their start), small test subset.
TINY = dict(
    num_runs=6, runs_per_shard=1, steps=30, num_checkpoints=5, batch_size=32, eval_subset=200,
    train_subset=512, optimizers=("adam",), adam_lr=(0.005, 0.01), workers=1,
)
TINY_MODEL = GPTConfig(
    chunk_size=64,
    transformer=TransformerConfig(width=128, depth=1, heads=2, fourier_dim=16),
    diffusion=DiffusionConfig(num_steps=50),
)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpt_ckpts")
    collect(CollectConfig(**TINY, out_dir=str(out)))
    return out


def test_permuted_network_computes_same_function() -> None:
    flat = torch.stack([random_init(s) for s in range(3)])
    pair = torch.stack([flat, 2 * flat], dim=1)  # [3, 2, D]: one permutation per row
    perm = permute_hidden(pair, torch.Generator().manual_seed(0))
    assert not torch.equal(perm, pair)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        for n in range(3):
            for m in range(2):
                ref = load_flat_params(TinyCNN(), pair[n, m])(x)
                out = load_flat_params(TinyCNN(), perm[n, m])(x)
                torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # The same permutation was applied to both vectors of a row.
    torch.testing.assert_close(perm[:, 1], 2 * perm[:, 0])


def test_tokenizer_roundtrip() -> None:
    tok = ParamTokenizer(chunk_size=100)
    flat = torch.stack([random_init(s) for s in range(4)])
    tok.fit(flat)
    tokens = tok.chunk(tok.normalize(flat))
    assert tokens.shape == (4, tok.num_tokens, 100)
    torch.testing.assert_close(tok.denormalize(tok.unchunk(tokens)), flat)
    # No token mixes two tensors: conv1 (432 values) fills 5 tokens, the last one padded.
    assert torch.equal(tokens[:, 4, 32:], torch.zeros(4, 68))


def test_unit_tokens_hold_a_unit_and_its_readout() -> None:
    tok = ParamTokenizer(layout="units")
    flat = torch.stack([random_init(s) for s in range(2)])
    tokens = tok.chunk(flat)
    assert tokens.shape == (2, 16 + 32 + 1, 154)
    torch.testing.assert_close(tok.unchunk(tokens), flat)
    p = unflatten_params(flat)
    assert torch.equal(tokens[:, 3, :27], p["conv1.weight"][:, 3].flatten(1))
    assert torch.equal(tokens[:, 3, 27:], torch.zeros(2, 154 - 27))
    assert torch.equal(tokens[:, 16 + 5], torch.cat([p["conv2.weight"][:, 5].flatten(1), p["fc.weight"][:, :, 5]], dim=1))
    assert torch.equal(tokens[:, -1, :10], p["fc.bias"])
    with pytest.raises(ValueError, match="unknown token layout 'neurons'"):
        ParamTokenizer(layout="neurons")


def _permute_conv2_units(flat: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    p = unflatten_params(flat)
    return torch.cat(
        [p["conv1.weight"].flatten(1), p["conv2.weight"][:, perm].flatten(1), p["fc.weight"][:, :, perm].flatten(1), p["fc.bias"]],
        dim=1,
    )


@pytest.mark.parametrize("layout", ["units", "chunks"])
def test_unit_tokens_make_the_denoiser_equivariant_to_conv2_units(layout: str) -> None:
    # Permuting conv2's units in the start and the noisy target permutes the estimate the
    # same way with unit tokens, for any weights; chunk tokens have no such symmetry (the
    # check below would fail for them, so it is not vacuous).
    torch.manual_seed(0)
    cfg = GPTConfig(
        chunk_size=154, tokens=layout, transformer=TransformerConfig(width=320, depth=1, heads=2, fourier_dim=16),
        diffusion=DiffusionConfig(num_steps=50),
    )
    gpt = GPT(cfg).eval()
    with torch.no_grad():
        for prm in gpt.net.parameters():  # the zero-initialised gates would hide everything
            prm.normal_(0, 0.05)
    start = torch.stack([random_init(s) for s in range(2)])
    x_t = torch.randn(2, NUM_PARAMS)
    t, ls, lt = torch.tensor([10, 30]), torch.tensor([2.3, 2.2]), torch.tensor([1.8, 1.9])
    perm = torch.randperm(32)
    with torch.no_grad():
        ref = gpt._denoiser(start, ls, lt)(x_t, t)
        out = gpt._denoiser(_permute_conv2_units(start, perm), ls, lt)(_permute_conv2_units(x_t, perm), t)
    equivariant = torch.allclose(out, _permute_conv2_units(ref, perm), atol=1e-4)
    assert equivariant == (layout == "units")


def test_collected_data_is_consistent(tiny_data: Path, tmp_path: Path) -> None:
    data = load_checkpoints(tiny_data, require_complete=True)
    assert data.params.shape == (6, 5, NUM_PARAMS)
    # The index records the CIFAR-10 source the losses were measured on; an index from
    # before it did still loads.
    assert data.cifar10 == cifar10_source() and Path(data.cifar10["path"]).exists()
    legacy = shutil.copytree(tiny_data, tmp_path / "legacy")
    index = json.loads((legacy / "index.json").read_text())
    del index["cifar10"]
    (legacy / "index.json").write_text(json.dumps(index))
    old = load_checkpoints(legacy, require_complete=True)
    assert old.cifar10 is None and torch.equal(old.test_loss, data.test_loss)
    assert torch.isfinite(data.test_loss).all()
    # Checkpoint 0 is the run's initialisation.
    torch.testing.assert_close(data.params[0, 0], random_init(data.runs[0].init_seed))
    # Training on a few hundred images still lowers the test loss a little on average.
    assert data.test_loss[:, -1].mean() < data.test_loss[:, 0].mean()


def test_diffusion_loss_falls(tiny_data: Path, tmp_path: Path) -> None:
    # Without permutations the tiny model can fit the six runs, so the loss must drop a lot.
    cfg = TrainConfig(
        data_dir=str(tiny_data), out_dir=str(tmp_path), model=TINY_MODEL, steps=200, batch_size=32,
        lr=3e-3, warmup=10, log_every=25, ckpt_every=200, permute=False,
    )
    train(cfg)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.5 * losses[0], losses


def test_bf16_autocast_training_follows_float32(tiny_data: Path, tmp_path: Path) -> None:
    # Same seed, so the same batches and noise: the two runs differ only by precision. Batch 8:
    # CPUs without bf16 instructions emulate it, and there batch 32 took 2 minutes.
    curves = {}
    for amp in (False, True):
        cfg = TrainConfig(
            data_dir=str(tiny_data), out_dir=str(tmp_path / str(amp)), model=TINY_MODEL, steps=100, batch_size=8,
            lr=3e-3, warmup=10, log_every=25, ckpt_every=100, amp=amp,
        )
        train(cfg)
        curves[amp] = [json.loads(line)["loss"] for line in (tmp_path / str(amp) / "metrics.jsonl").read_text().splitlines()]
    assert curves[True] != curves[False]  # autocast was on
    assert curves[True][-1] < 0.6 * curves[True][0], curves
    for a, b in zip(curves[True], curves[False]):
        assert a == pytest.approx(b, rel=0.01), curves  # measured: within 0.03% (batch 32), 0.02% (batch 8)


@pytest.mark.parametrize("native", [False, True])
def test_amp_warns_on_a_cpu_without_bf16(
    native: bool, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The package exports the function `train` under the module's name, so patch the module object.
    monkeypatch.setattr(importlib.import_module("ghn.baselines.gpt.train"), "cpu_has_native_bf16", lambda: native)
    cfg = TrainConfig(data_dir=str(tiny_data), out_dir=str(tmp_path), model=TINY_MODEL, steps=1, batch_size=4, amp=True)
    with caplog.at_level(logging.WARNING, logger="ghn.baselines.gpt.train"):
        train(cfg)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warned) != native, warned
    assert all("set amp=false" in m for m in warned)


@pytest.mark.parametrize("types", [[0] * 3 + [1] * 4 + [2], list(range(6)), [0, 1, 0, 2, 2, 1]])
def test_token_linear_applies_each_tokens_type_map(types: list[int]) -> None:
    torch.manual_seed(0)
    tl = TokenLinear(torch.tensor(types), 5, 3)
    with torch.no_grad():
        tl.bias.normal_()
    x = torch.randn(2, len(types), 5)
    out = tl(x)
    for i, t in enumerate(types):
        torch.testing.assert_close(out[:, i], x[:, i] @ tl.weight[t] + tl.bias[t])
    out.square().sum().backward()
    grad = torch.zeros_like(tl.weight)
    for i, t in enumerate(types):  # each type's gradient sums over its tokens
        grad[t] += x[:, i].T @ (2 * out[:, i].detach())
    torch.testing.assert_close(tl.weight.grad, grad)


def test_attention_runs_in_float32_under_cpu_autocast() -> None:
    q, k, v = (torch.randn(2, 3, 5, 8, requires_grad=True) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v))
    out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


def _fitted(gpt: GPT, start: torch.Tensor, future: torch.Tensor, loss_start: torch.Tensor,
            loss_target: torch.Tensor, copies: int, gen: torch.Generator) -> GPT:
    """``gpt`` fitted to the pairs (each repeated ``copies`` times per batch) for 300 Adam
    steps, its diffusion noise drawn from ``gen``; returned in eval mode. The learning rate
    decays to zero so that the fit ends converged rather than wherever the last noisy step
    left it: at a constant rate, how well the "no prompt" mean was fitted varied fourfold
    with torch's thread count."""
    steps = 300
    gpt.fit_normalization(torch.cat([start, future]), torch.cat([loss_start, loss_target]), start, future)
    opt = torch.optim.Adam(gpt.parameters(), lr=3e-3)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
    rows = torch.arange(len(start)).repeat(copies)
    for _ in range(steps):
        loss = gpt.loss(start[rows], future[rows], loss_start[rows], loss_target[rows], gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    return gpt.eval()


def test_sampler_returns_fitted_futures_and_follows_the_prompt() -> None:
    # Two pairs share a start and differ only in the prompted loss, a third has its own
    # start. A model fitted to these pairs must return each future from the sampler: this
    # fails if the losses do not reach the output, if (de)normalisation, the preconditioned
    # estimate or a sampler's update is wrong, or if EMA/eval weights are not the fitted ones.
    torch.manual_seed(0)
    start = torch.stack([random_init(1), random_init(1), random_init(2)])
    future = start + 0.05 * torch.randn(3, NUM_PARAMS)
    loss_start, loss_target = torch.full((3,), 2.3), torch.tensor([1.7, 2.1, 1.9])
    gen = torch.Generator().manual_seed(0)  # the fit's noise, then the samplers'
    gpt = _fitted(GPT(TINY_MODEL), start, future, loss_start, loss_target, copies=8, gen=gen)
    x0, s0 = gpt.tokenizer.normalize(future), gpt.tokenizer.normalize(start)
    move = (x0 - s0).square().mean(dim=1)  # how far each future is from its start
    for method, steps in [("ddim", 1), ("ddim", 10), ("ddpm", 0)]:
        theta = gpt.sample(start, loss_start, loss_target, method=method, steps=steps, generator=gen)
        err = (gpt.tokenizer.normalize(theta) - x0).square().mean(dim=1)
        assert (err < 0.1 * move).all(), (method, steps, err / move)
    # The prompt alone separates the first two: swapping prompts swaps the samples.
    swapped = gpt.sample(start[:2], loss_start[:2], loss_target[[1, 0]], method="ddim", steps=10, generator=gen)
    err = (gpt.tokenizer.normalize(swapped) - x0[[1, 0]]).square().mean(dim=1)
    assert (err < 0.1 * move[:2]).all(), err / move[:2]


def test_guidance_extrapolates_along_the_prompt() -> None:
    # One start, two futures told apart by the prompt alone, fitted with prompt dropout: the
    # model learns both prompted futures and, without a prompt, their mean. Guidance w then
    # samples mean + w (prompted - mean): the mean at w = 0, the prompted future at w = 1,
    # beyond it at w = 2. A model that ignores the dropped rows, or a sampler that guides
    # the wrong way, misses these.
    torch.manual_seed(0)
    start = torch.stack([random_init(1), random_init(1)])
    future = start + 0.05 * torch.randn(2, NUM_PARAMS)
    loss_start, loss_target = torch.full((2,), 2.3), torch.tensor([1.7, 2.1])
    gpt = _fitted(GPT(replace(TINY_MODEL, prompt_dropout=0.5)), start, future, loss_start, loss_target, copies=16,
                  gen=torch.Generator().manual_seed(0))
    assert gpt.net.null_prompt.abs().sum() > 0  # the "no prompt" embedding was trained
    x0 = gpt.tokenizer.normalize(future)
    mean = x0.mean(dim=0, keepdim=True)
    spread = (x0 - mean).square().mean(dim=1)  # squared distance of each future from the mean

    def guided(w: float) -> torch.Tensor:
        theta = gpt.sample(start, loss_start, loss_target, method="ddim", steps=1,
                           generator=torch.Generator().manual_seed(1), guidance=w)
        return gpt.tokenizer.normalize(theta)

    # The "no prompt" mean is learned from half the rows, with a bimodal target, so it is
    # the loosest part of the fit (w = 0: 0.10-0.19 of the spread over four noise seeds;
    # w = 2, which extrapolates, 0.09-0.18); a sampler that ignored guidance would be off
    # by the whole spread at w = 0 and w = 2, one that guided the wrong way by more.
    for w, target, bound in [(1.0, x0, 0.2), (0.0, mean, 0.4), (2.0, 2 * x0 - mean, 0.5)]:
        err = (guided(w) - target).square().mean(dim=1)
        assert (err < bound * spread).all(), (w, err / spread)
    # One DDIM step is a single denoiser call, so guidance is exactly affine in w there.
    torch.testing.assert_close(guided(3.0), 3 * guided(1.0) - 2 * guided(0.0), atol=1e-4, rtol=0)


def test_guidance_needs_a_model_trained_with_prompt_dropout(tiny_data: Path, tmp_path: Path, capsys) -> None:
    gpt = GPT(TINY_MODEL)
    start = random_init(0)[None]
    with pytest.raises(ValueError, match="needs a model trained with prompt dropout"):
        gpt.sample(start, torch.tensor([2.3]), torch.tensor([1.8]), guidance=2.0)
    with pytest.raises(ValueError, match=r"prompt_dropout must be in \[0, 1\), got 1.0"):
        GPT(replace(TINY_MODEL, prompt_dropout=1.0))
    model = _untrained_gpt_file(tiny_data, tmp_path / "ema.safetensors")
    with pytest.raises(SystemExit) as exc:
        _script("eval_gpt").main(["--set", f"model={model}", f"data={tiny_data}", f"out={tmp_path}",
                                  *SMALL_EVAL, "guidance_sweep=[1,2]"])
    assert exc.value.code == 2
    assert "trained without prompt dropout, so it cannot be guided" in capsys.readouterr().err


def test_tokens_narrower_than_two_chunks_are_refused() -> None:
    # The sampler test above fails for such models (see GPT.__init__).
    with pytest.raises(ValueError, match="twice the token size 144"):
        GPT(GPTConfig(chunk_size=144, transformer=TransformerConfig(width=128, depth=1, heads=2)))


def test_loss_embedding_frequency_is_kept_with_the_model(tiny_data: Path, tmp_path: Path) -> None:
    smooth = replace(TINY_MODEL, transformer=replace(TINY_MODEL.transformer, loss_max_freq=3.0))
    gpt = load_gpt(_untrained_gpt_file(tiny_data, tmp_path / "smooth.safetensors", smooth, random_weights=True))
    assert gpt.net.loss_target_embed.freqs.max().item() == pytest.approx(3.0)
    assert gpt.net.loss_start_embed.freqs.max().item() == pytest.approx(3.0)
    # Files written before the setting existed hold no such key and get the old embedding.
    assert GPTConfig.from_dict({"transformer": {"width": 128}}).transformer.loss_max_freq == 100.0
    with pytest.raises(ValueError, match="loss_max_freq must be above the lowest frequency 0.1, got 0.1"):
        TransformerConfig(loss_max_freq=0.1)


def test_default_collection_ends_are_functions_of_their_start() -> None:
    # G.pt sees only a start checkpoint and losses, so the future it regresses on must be
    # (nearly) determined by them. Runs of the default collection from one initialisation
    # with different data orders, at its largest learning rate, must end at nearly the
    # same point: Adam, or SGD at lr 0.1-0.2, fail this (update cosine 0.4-0.85), and their
    # futures average to networks worse than any of them.
    cfg = CollectConfig()
    images, labels, _, _ = collection_data(cfg)
    for opt in cfg.optimizers:
        lr = (cfg.sgd_lr if opt == "sgd" else cfg.adam_lr)[1]
        first, second = (train_run(RunSpec(-1, 7, seed, opt, lr, 0.0), cfg, images, labels) for seed in (1, 2))
        updates = [unflatten_params(run[-1] - run[0]) for run in (first, second)]
        for name in PARAM_SHAPES:
            cos = torch.nn.functional.cosine_similarity(updates[0][name].flatten(), updates[1][name].flatten(), dim=0)
            assert cos > 0.85, (opt, lr, name, cos)


def _runs(init: torch.Tensor, final: torch.Tensor) -> CheckpointData:
    """A data set of init/final pairs [R, D] (no losses needed by update_stats)."""
    r = init.shape[0]
    return CheckpointData(torch.stack([init, final], 1), torch.zeros(r, 2), torch.zeros(r, 2), torch.tensor([0, 1]), [])


def test_update_stats_tell_a_linear_update_from_an_unpredictable_one() -> None:
    g = torch.Generator().manual_seed(0)
    # Inits in a 4-dimensional subspace and updates linear in them: held-out runs are
    # predicted (R² near 1 for every tensor) and lie in the fitting runs' span.
    z = torch.randn(40, 4, generator=g, dtype=torch.float64)
    basis, coef = (torch.randn(4, NUM_PARAMS, generator=g, dtype=torch.float64) for _ in range(2))
    init = z @ basis
    linear = update_stats(_runs(init, init + z @ coef))
    assert linear["fit_runs"] == 32 and linear["heldout_runs"] == 8
    assert all(v > 0.95 for v in linear["linear_r2"].values()), linear
    assert linear["heldout_init_in_span"] > 0.99
    # Full-rank random inits with updates independent of them: nothing is predicted, and a
    # held-out init is mostly outside the span of 32 others (about 32 / D of it inside).
    init = torch.randn(40, NUM_PARAMS, generator=g, dtype=torch.float64)
    noise = update_stats(_runs(init, init + torch.randn(40, NUM_PARAMS, generator=g, dtype=torch.float64)))
    assert all(v < 0.1 for v in noise["linear_r2"].values()), noise
    assert noise["heldout_init_in_span"] < 0.05
    # Doubling every parameter moves each tensor by its own norm.
    moved = update_stats(_runs(init, 2 * init))
    assert all(abs(v - 1) < 1e-9 for v in moved["relative_move"].values())
    # Only the first max_runs runs are fitted and scored.
    capped = update_stats(_runs(init, 2 * init), max_runs=20)
    assert capped["fit_runs"] == 16 and capped["heldout_runs"] == 4
    # Too few runs to hold any out: no fit is claimed.
    few = update_stats(_runs(init[:5], 2 * init[:5]))
    assert few["ridge"] is None and set(few["linear_r2"].values()) == {None}


class _Killed(Exception):
    """Stands in for a kill in the middle of training."""


def test_sampling_returns_loadable_params(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TrainConfig(
        data_dir=str(tiny_data), out_dir=str(tmp_path), model=TINY_MODEL, steps=10, batch_size=8,
        warmup=2, ckpt_every=4, log_every=3,
    )
    lr_at = gpt_train.lr_at

    def slow_then_killed(c: TrainConfig, step: int) -> float:
        if step == 3:
            time.sleep(0.25)  # once per parameter group, between the log line at 3 and the checkpoint at 4
        if step == 6:
            raise _Killed  # after the checkpoint at step 4 and the log line at step 6
        return lr_at(c, step)

    with monkeypatch.context() as m:
        m.setattr(gpt_train, "lr_at", slow_then_killed)
        with pytest.raises(_Killed):
            train(cfg)

    def logged() -> tuple[list[int], list[float]]:
        recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
        return [r["step"] for r in recs], [r["time"] for r in recs]

    assert logged()[0] == [3, 6]
    # Resume continues from the saved step and reaches the new total; steps after that
    # checkpoint are logged once, and the time goes on from the time of the checkpoint
    # (which includes the sleep), not from 0 or from the last log line before it.
    train(TrainConfig(**{**asdict(cfg), "model": TINY_MODEL, "steps": 15}), resume=True)
    steps, times = logged()
    assert steps == [3, 6, 9, 12, 15]
    assert times[1] - times[0] >= 0.5 and times == sorted(times), times
    # A state.pt from before training time was saved goes on from the last kept line's time.
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    del state["elapsed"]
    torch.save(state, tmp_path / "state.pt")
    train(TrainConfig(**{**asdict(cfg), "model": TINY_MODEL, "steps": 18}), resume=True)
    steps, later = logged()
    assert steps == [3, 6, 9, 12, 15, 18] and later[:-1] == times and later[-1] > times[-1], later
    gpt = load_gpt(tmp_path / "ema.safetensors")
    start = torch.stack([random_init(s) for s in (101, 102, 103)])
    ls, lt = torch.full((3,), 2.3), torch.tensor([1.9, 2.0, 2.1])
    for method, steps in [("ddim", 1), ("ddim", 5), ("ddpm", 0)]:
        theta = gpt.sample(start, ls, lt, method=method, steps=steps, generator=torch.Generator().manual_seed(0))
        assert theta.shape == (3, NUM_PARAMS) and torch.isfinite(theta).all()
        net = load_flat_params(TinyCNN(), theta[0])
        assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == PARAM_SHAPES
        assert torch.isfinite(net(torch.randn(2, 3, 32, 32))).all()


def test_a_pause_is_left_out_of_the_training_time(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    """A pause (kill -STOP) is simulated inside step 3: a 4 s sleep ended by a SIGCONT the
    process sends itself. Neither the log nor the state counts it."""
    cfg = TrainConfig(data_dir=str(tiny_data), out_dir=str(tmp_path), model=TINY_MODEL, steps=6, batch_size=8,
                      warmup=2, ckpt_every=6, log_every=3)
    lr_at, paused = gpt_train.lr_at, []

    def paused_lr_at(c: TrainConfig, step: int) -> float:
        if step == 3 and not paused:
            paused.append(step)
            time.sleep(4)
            os.kill(os.getpid(), signal.SIGCONT)
        return lr_at(c, step)

    handler = signal.getsignal(signal.SIGCONT)
    monkeypatch.setattr(gpt_train, "lr_at", paused_lr_at)
    train(cfg)
    times = [json.loads(line)["time"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    elapsed = torch.load(tmp_path / "state.pt", weights_only=True)["elapsed"]
    assert paused and len(times) == 2 and 0 < times[0] < times[1] <= elapsed < 4, (times, elapsed)
    assert signal.getsignal(signal.SIGCONT) == handler


def test_resumed_metrics_keep_one_line_per_step_up_to_the_checkpoint(tmp_path: Path) -> None:
    # A file from before metrics were truncated on resume: killed after step 9 (checkpoint
    # at 4, the log line at 9 cut short), resumed, logged 6 and 9 again, killed again.
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 3, "time": 3.0}, {"step": 6, "time": 6.0}, {"step": 6, "time": 1.0}, {"step": 9, "time": 2.0},
             {"step": 12, "time": 3.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 1')
    assert gpt_train._truncate_metrics(path, 9) == 2.0
    assert [json.loads(line) for line in path.read_text().splitlines()] == [lines[0], lines[2], lines[3]]
    assert gpt_train._truncate_metrics(path, 0) is None and path.read_text() == ""


@pytest.mark.slow
def test_collection_resumes_after_kill(tmp_path: Path) -> None:
    out = tmp_path / "ckpts"
    cfg = {**TINY, "num_runs": 8, "steps": 60, "workers": 2, "out_dir": str(out)}
    overrides = [f"{k}={json.dumps(v)}" for k, v in cfg.items()]  # JSON is valid YAML
    cmd = [sys.executable, str(ROOT / "experiments" / "collect_checkpoints.py"), "collect", "--set", *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Own process group, so that SIGKILL reaches the pool workers too (a real crash).
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline and len(list(out.glob("shard_*.safetensors"))) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_killed = len(list(out.glob("shard_*.safetensors")))
    assert 2 <= n_killed < 8, "kill must land mid-collection"
    assert not json.loads((out / "index.json").read_text())["complete"]

    # With an empty cache the workers decode the archive, under a tqdm bar whose lock is a
    # semaphore: a worker killed at the pool's end instead of exiting leaks it.
    fresh_cache = {**env, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    done = subprocess.run(cmd, env=fresh_cache, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()
    assert b"leaked semaphore" not in done.stderr, "pool workers must exit on their own"
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and len(index["shards"]) == 8
    assert not list(out.glob("*.tmp"))
    data = load_checkpoints(out, require_complete=True)
    assert data.params.shape == (8, 5, NUM_PARAMS) and torch.isfinite(data.params).all()
    assert [r.run_id for r in data.runs] == list(range(8))
    # Every shard, whether written before or after the kill, equals a fresh computation.
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    ref_cfg = CollectConfig(**{**cfg, "out_dir": str(ref_dir)})
    for s in (0, 7):
        collect_shard(ref_cfg, s)
        got, ref = load_file(str(shard_path(out, s))), load_file(str(shard_path(ref_dir, s)))
        for k in ref:
            torch.testing.assert_close(got[k], ref[k])


@pytest.mark.parametrize("name", ["gpt_train.yaml", "gpt_train_units.yaml"])
def test_shipped_training_configs_build_their_model(name: str) -> None:
    cfg = TrainConfig.from_dict(load_config(ROOT / "experiments" / "configs" / name, []))
    gpt = GPT(cfg.model)
    assert gpt.tokenizer.num_params == NUM_PARAMS


def test_unknown_config_keys_are_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown GPTConfig key\(s\) \['token'\] in section 'model'; known keys: \['chunk_size', 'tokens'"):
        TrainConfig.from_dict({"model": {"token": "units"}})
    with pytest.raises(ValueError, match=r"unknown TransformerConfig key\(s\) \['widht'\] in section 'model.transformer'.*'width'"):
        TrainConfig.from_dict({"model": {"transformer": {"widht": 64}}})
    with pytest.raises(ValueError, match=r"unknown DiffusionConfig key\(s\) \['steps'\] in section 'diffusion'.*'num_steps'"):
        GPTConfig.from_dict({"diffusion": {"steps": 10}})
    with pytest.raises(ValueError, match=r"unknown TrainConfig key\(s\) \['lr_warmup', 'step'\]; known keys: .*'steps'"):
        TrainConfig.from_dict({"step": 5, "lr_warmup": 3, "lr": 0.1})
    with pytest.raises(ValueError, match=r"unknown CollectConfig key\(s\) \['num_run'\]; known keys: \['num_runs'"):
        CollectConfig.from_dict({"num_run": 5})
    # Known keys, an empty section and what saved files hold are read as before.
    cfg = TrainConfig.from_dict({"steps": 5, "model": {"tokens": "units", "transformer": {"width": 320}}, "threads": None})
    assert (cfg.steps, cfg.model.tokens, cfg.model.transformer.width, cfg.model.transformer.depth) == (5, "units", 320, 4)
    assert TrainConfig.from_dict({"model": None}).model == GPTConfig()
    assert GPTConfig.from_dict(json.loads(json.dumps(asdict(TINY_MODEL)))) == TINY_MODEL
    stored = CollectConfig(**TINY).dataset_fields()
    assert CollectConfig.from_dict(json.loads(json.dumps(stored))).dataset_fields() == stored


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("train_gpt", ["--set", "model.token=units"], "unknown GPTConfig key(s) ['token'] in section 'model'"),
        ("collect_checkpoints", ["collect", "--set", "num_run=5"], "unknown CollectConfig key(s) ['num_run']"),
        ("eval_gpt", ["--set", "num_init=5"], "unknown EvalConfig key(s) ['num_init']"),
    ],
)
def test_clis_report_unknown_config_keys_as_usage_errors(script: str, argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        _script(script).main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and message in err and "known keys:" in err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("num_inits=0", "num_inits must be an integer >= 1, got 0"),
        ("ddim_steps=two", "ddim_steps must be an integer >= 1, got 'two'"),
        ("sweep_points=1", "sweep_points must be an integer >= 2, got 1"),
        ("sgd_max_steps=0", "sgd_max_steps must be an integer >= 1, got 0"),
        ("sampler=ddim10", "sampler must be 'ddim' or 'ddpm', got 'ddim10'"),
        ("ddim_sweep=[1,0]", "ddim_sweep must be a list of integers >= 1, got [1, 0]"),
        ("guidance=-1", "guidance must be a number >= 0 and guidance_sweep a list of them, got -1 and []"),
        ("guidance_sweep=[1,x]", "guidance must be a number >= 0 and guidance_sweep a list of them, got 1.0 and [1, 'x']"),
    ],
)
def test_eval_gpt_reports_bad_values_as_usage_errors(override: str, message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        _script("eval_gpt").main(["--config", str(ROOT / "experiments/configs/gpt_eval.yaml"), "--set", override])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_eval_gpt_config_file_holds_the_defaults() -> None:
    # Running without --config must mean what the documented config file says.
    eval_gpt = _script("eval_gpt")
    cfg = eval_gpt.EvalConfig.from_dict(load_config(ROOT / "experiments/configs/gpt_eval.yaml"))
    assert cfg == eval_gpt.EvalConfig()


SMALL_EVAL = ["num_inits=2", "ddim_steps=2", "ddim_sweep=[]", "ddpm_inits=0", "sgd_inits=1", "sgd_every=10",
              "sgd_max_steps=10", "seen_inits=2", "sweep_points=2", "sweep_inits=2"]


def _untrained_gpt_file(data_dir: Path, path: Path, cfg: GPTConfig = TINY_MODEL, random_weights: bool = False) -> Path:
    data = load_checkpoints(data_dir)
    gpt = GPT(cfg)
    gpt.fit_normalization(data.params.flatten(0, 1), data.test_loss.flatten(), data.params[:, 0], data.params[:, -1])
    if random_weights:  # the zero-initialised gates and decoder would make every prompt alike
        with torch.no_grad():
            for prm in gpt.net.parameters():
                prm.normal_(0, 0.05)
    save_gpt(gpt, path)
    return path


def test_evaluation_reads_the_requested_cifar10_source(tiny_data: Path, tmp_path: Path, caplog) -> None:
    eval_gpt = _script("eval_gpt")
    data = load_checkpoints(tiny_data)
    missing = str(tmp_path / "no_cifar")
    # The option reaches both places that load the test split.
    with pytest.raises(CIFAR10NotFoundError, match="no_cifar"):
        eval_gpt.main(["--set", f"data={tiny_data}", f"data_root={missing}", f"out={tmp_path}"])
    with pytest.raises(CIFAR10NotFoundError, match="no_cifar"):
        one_step(GPT(TINY_MODEL), data, 1, data_root=missing)
    # A collection that records another source than the evaluation reads gets a warning.
    moved = shutil.copytree(tiny_data, tmp_path / "moved")
    index = json.loads((moved / "index.json").read_text())
    index["cifar10"] = {"kind": "archive", "path": "/elsewhere/cifar10.tar.gz"}
    (moved / "index.json").write_text(json.dumps(index))
    model = _untrained_gpt_file(tiny_data, tmp_path / "ema.safetensors")
    with caplog.at_level(logging.WARNING, logger="eval_gpt"):
        eval_gpt.main(["--set", f"model={model}", f"data={moved}", f"data_root={data.cifar10['path']}",
                       f"out={tmp_path / 'out'}", *SMALL_EVAL])
    assert "/elsewhere/cifar10.tar.gz" in caplog.text and data.cifar10["path"] in caplog.text
    results = json.loads((tmp_path / "out" / "gpt_eval.json").read_text())
    assert results["data"]["cifar10"] == data.cifar10
    assert results["data"]["collection_cifar10"] == index["cifar10"]


def test_evaluation_parts_draw_their_own_noise(tiny_data: Path, tmp_path: Path) -> None:
    # Adding the DDPM row must not change the sampling noise, hence the figures, of the
    # parts after it (fit check, prompt alignment), nor of the one-step figure before it.
    eval_gpt = _script("eval_gpt")
    model = _untrained_gpt_file(tiny_data, tmp_path / "ema.safetensors")
    runs = {}
    for ddpm in ("0", "2"):
        argv = [*SMALL_EVAL, f"ddpm_inits={ddpm}"]  # the later override wins
        eval_gpt.main(["--set", f"model={model}", f"data={tiny_data}", f"out={tmp_path / ddpm}", *argv])
        runs[ddpm] = json.loads((tmp_path / ddpm / "gpt_eval.json").read_text())
    assert "one_step_ddpm" in runs["2"] and "one_step_ddpm" not in runs["0"]
    for part in ("one_step_ddim", "seen_inits_own_final_prompt"):
        assert {k: v for k, v in runs["0"][part].items() if k != "seconds"} == \
            {k: v for k, v in runs["2"][part].items() if k != "seconds"}
    assert runs["0"]["prompt_alignment"]["achieved_median"] == runs["2"]["prompt_alignment"]["achieved_median"]


def test_evaluation_sweeps_ddim_steps_from_the_main_figures_noise(tiny_data: Path, tmp_path: Path) -> None:
    # Each sweep row samples the main figure's inits from its starting noise, so the row with
    # the main figure's step count reproduces it, and the other rows differ from it.
    eval_gpt = _script("eval_gpt")
    model = _untrained_gpt_file(tiny_data, tmp_path / "ema.safetensors")
    eval_gpt.main(["--set", f"model={model}", f"data={tiny_data}", f"out={tmp_path}", *SMALL_EVAL,
                   "num_inits=3", "ddim_sweep=[1,2]"])
    results = json.loads((tmp_path / "gpt_eval.json").read_text())
    one, sweep = results["one_step_ddim"], results["one_step_ddim_sweep"]
    assert [row["ddim_steps"] for row in sweep] == [1, 2]
    assert {k: sweep[1][k] for k in ("loss_median", "loss_mean", "err_median", "err_mean", "n", "finite")} == \
        {k: one[k] for k in ("loss_median", "loss_mean", "err_median", "err_mean", "n", "finite")}
    assert sweep[0]["loss_mean"] != one["loss_mean"]
    assert results["eval_config"]["ddim_sweep"] == [1, 2]
    assert "| 1 |" in (tmp_path / "gpt_eval.md").read_text()


def test_evaluation_sweeps_guidance_from_the_main_figures_noise(tiny_data: Path, tmp_path: Path) -> None:
    # Each guidance row samples the main figures' inits from their noise: the row at scale 1
    # reproduces the one-step figure and the prompt alignment, the row at scale 2 differs.
    eval_gpt = _script("eval_gpt")
    model = _untrained_gpt_file(tiny_data, tmp_path / "ema.safetensors", replace(TINY_MODEL, prompt_dropout=0.1),
                                random_weights=True)
    eval_gpt.main(["--set", f"model={model}", f"data={tiny_data}", f"out={tmp_path}", *SMALL_EVAL,
                   "num_inits=3", "guidance_sweep=[1,2]"])
    results = json.loads((tmp_path / "gpt_eval.json").read_text())
    one, align, sweep = results["one_step_ddim"], results["prompt_alignment"], results["guidance_sweep"]
    assert [row["guidance"] for row in sweep] == [1, 2]
    keys = ("loss_median", "loss_mean", "err_median", "err_mean", "n")
    assert {k: sweep[0]["one_step"][k] for k in keys} == {k: one[k] for k in keys}
    assert sweep[0]["prompt_alignment"] == align
    assert sweep[1]["one_step"]["loss_mean"] != one["loss_mean"]
    assert sweep[1]["prompt_alignment"]["achieved_median"] != align["achieved_median"]
    assert "| guidance | one-step median test loss |" in (tmp_path / "gpt_eval.md").read_text()
