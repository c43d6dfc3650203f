"""Benchmark a meta-model on CIFAR-10: accuracy of predicted parameters, no gradient step.

    make bench-cifar                                         # quick config, shipped meta-model
    python experiments/eval_ghn.py --config experiments/configs/bench_cifar_quick.yaml \\
        --meta-model runs/ghn2_cpu/final.pt [--set key=value ...]
    python experiments/eval_ghn.py --config experiments/configs/bench_cifar.yaml --meta-model ...

For every network of the benchmark (a seeded sample, or all, of the DeepNets test and
out-of-distribution splits, and torchvision models adapted to 32x32 input) the meta-model
predicts all parameters in one forward pass and the network classifies the CIFAR-10 test
images (the JPEG copy in ``../shared/data``, or a torchvision root) with no gradient step.
As in GHN-2, batch norm normalises with the statistics of each test batch of 64, because
running statistics are not predicted. The same networks with PyTorch's default random
initialisation, and optionally MLP-hypernetwork and GHN-1 checkpoints, are evaluated
the same way in the same table.

Two training-based comparisons follow:

* equivalent SGD steps: for a few networks, SGD from the random initialisation,
  evaluated every ``sgd.eval_every`` steps; the first evaluated step count whose accuracy
  reaches the meta-model's is reported (``> max_steps`` when the budget runs out);
* fine-tuning: ResNet-18 (32x32) trained with SGD from predicted and from random
  parameters on the same batches, one epoch in the full config, accuracy curves reported.

Writes ``<out_dir>/<name>.json`` (every number, the meta-model's identity, the config,
the machine and wall times), ``<out_dir>/<name>.md`` (the tables, also printed at the
end) and ``<out_dir>/<name>.png`` (accuracy bars, fine-tuning and SGD curves).

Without ``--meta-model`` the pretrained meta-model shipped with the package is used; if
it cannot be loaded (a broken install), the script says how to pass one and exits with
status 2. It never writes results for a meta-model it could not load, and a failure in
one network or stage is recorded in the results while the others still run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from deepnets import SPLIT_NAMES, count_flops, get_split, num_flops
from ghn import GHN, hub, predict, use_batch_stats
from ghn.baselines.gpt import NUM_PARAMS, TinyCNN, load_checkpoints, load_flat_params, load_gpt
from ghn.baselines.gpt.one_step import one_step
from ghn.cifar_models import adaptation, check_classifier_name, cifar_model
from ghn.data import CIFAR10_SIZES, CIFAR10Loader, CIFAR10NotFoundError, cifar10_loader, cifar10_source
from ghn.machine import load_average, machine
from ghn.overrides import add_config_arguments, from_mapping, load_config, parsed_overrides

log = logging.getLogger("eval_ghn")

INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
EXIT_NO_INPUT = 2  # status when the meta-model or the data cannot be found
METHOD_LABELS = {"ghn": "GHN (this meta-model)", "random": "Random init", "mlp": "MLP-HN", "ghn1": "GHN-1",
                 "gpt": "G.pt (one step)"}
BASELINES = ("mlp", "ghn1")  # optional meta-models, given as checkpoint paths in the config
# Knyazev et al. (NeurIPS 2021), CIFAR-10, no gradient step (docs/ghn-reference.md, section 5).
PAPER_GHN2 = {"test": 66.9, "bnfree": 36.8, "resnet50": 58.6}


# -- configuration --------------------------------------------------------------------------


@dataclass
class SGDConfig:
    """Equivalent SGD steps: train from random init until the meta-model's accuracy is reached.

    Attributes:
        models: network names (as in the table: ``"resnet18"``, ``"test/12"``).
        max_steps: step budget per network.
        eval_every: test-subset evaluation period in steps, i.e. the resolution of the answer.
        lr, momentum, weight_decay: constant-rate SGD settings.
    """

    models: list[str] = field(default_factory=lambda: ["resnet18", "mobilenet_v2"])
    max_steps: int = 5000
    eval_every: int = 100
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4


@dataclass
class FinetuneConfig:
    """Fine-tuning from predicted vs random parameters on the same batches.

    Attributes:
        model: network name (ResNet-18 in the benchmark; a cheaper one in tests).
        steps: SGD steps; ``None`` for one epoch of CIFAR-10 at batch 64 (781 steps); 0
            skips the stage (its step-0 accuracies would repeat the table's).
        eval_every: test-subset evaluation period in steps.
        lr, momentum, weight_decay: constant-rate SGD settings, the same for both runs.
    """

    model: str = "resnet18"
    steps: int | None = None
    eval_every: int = 50
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4


@dataclass
class GPTRowConfig:
    """The G.pt baseline's row: its tiny CNN (5,370 parameters) from unseen random inits,
    each given one G.pt step prompted with the best test loss of G.pt's data set, next to
    the same network's parameters predicted by the meta-models.

    Attributes:
        model: a trained G.pt (``experiments/train_gpt.py`` writes ``ema.safetensors``);
            ``None``, or a path that does not exist, skips the row with a note.
        data: the checkpoint data set it was trained on (the prompt and the inits' losses).
        inits: random inits, averaged in the row's random and G.pt columns.
        ddim_steps: steps of the DDIM sampler.
    """

    model: str | None = None
    data: str | None = None
    inits: int = 10
    ddim_steps: int = 10


@dataclass
class BenchConfig:
    """Everything the benchmark does; YAML files set these fields, ``key=value`` overrides them.

    Attributes:
        meta_model: path or registered name of the meta-model (``--meta-model`` wins);
            ``None`` for the pretrained one shipped with the package.
        baselines: ``{"mlp": path, "ghn1": path}``; a missing or null path skips that column.
        splits: DeepNets split -> architectures to evaluate: a count (a seeded sample),
            ``null`` (all of them) or an explicit list of indices.
        torchvision: torchvision model names, adapted to 32x32 input (`ghn.cifar_models`).
        test_images: size of the seeded, class-stratified test subset; ``None``: all 10,000.
        batch_size: test batch; also the batch whose statistics batch norm uses.
        train_batch_size: SGD batch of the training-based comparisons.
        channels_last: feed images in channels-last memory format: the same accuracies to
            float rounding, faster convolutions on CPU (see ``ghn.data.CIFAR10Loader``).
        seed: seeds the architecture sample, the test subset, random inits and SGD batches.
        data_root: CIFAR-10 source (see `ghn.data.load_cifar10`); ``None`` searches.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        threads: CPU threads for torch; ``None`` keeps torch's default unless the machine
            is already busy (1-minute load average at least the core count), then 1.
        gpt: the G.pt baseline's row (`GPTRowConfig`).
        out_dir, name: outputs go to ``<out_dir>/<name>.{json,md,png}``.
    """

    meta_model: str | None = None
    baselines: dict[str, str | None] = field(default_factory=lambda: {"mlp": None, "ghn1": None})
    splits: dict[str, int | list[int] | None] = field(
        default_factory=lambda: {"test": None, "wide": None, "deep": None, "dense": None, "bnfree": None}
    )
    torchvision: list[str] = field(
        default_factory=lambda: ["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "vit_b_16", "convnext_tiny"]
    )
    test_images: int | None = None
    batch_size: int = 64
    train_batch_size: int = 64
    channels_last: bool = True
    seed: int = 0
    sgd: SGDConfig = field(default_factory=SGDConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    gpt: GPTRowConfig = field(default_factory=GPTRowConfig)
    data_root: str | None = None
    device: str = "cpu"
    threads: int | None = None
    out_dir: str = "results"
    name: str = "bench_cifar"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.splits) - set(SPLIT_NAMES))
        if unknown:
            raise ValueError(f"unknown DeepNets split(s) {unknown}; known: {list(SPLIT_NAMES)}")
        unknown = sorted(set(self.baselines) - set(BASELINES))
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; known: {list(BASELINES)}")
        if self.test_images is not None and not 0 < self.test_images <= CIFAR10_SIZES["test"]:
            raise ValueError(f"test_images must be in 1..{CIFAR10_SIZES['test']} or null, got {self.test_images}")
        for key, value in (("sgd.eval_every", self.sgd.eval_every), ("finetune.eval_every", self.finetune.eval_every),
                           ("gpt.inits", self.gpt.inits), ("gpt.ddim_steps", self.gpt.ddim_steps)):
            if value < 1:
                raise ValueError(f"{key} must be at least 1, got {value}")
        if self.finetune.steps is not None and self.finetune.steps < 0:
            raise ValueError(f"finetune.steps must be at least 0 (0 skips fine-tuning) or null, got {self.finetune.steps}")

    @classmethod
    def load(cls, path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> BenchConfig:
        """Read a YAML file (or start from the defaults) and apply ``key=value`` overrides;
        dotted keys reach nested sections (``sgd.max_steps=200``, ``splits.test=20``) and
        values are parsed as YAML (``torchvision=[resnet18]``)."""
        return from_mapping(cls, load_config(path, overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- networks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """One network of the benchmark.

    ``name`` is ``"<split>/<index>"`` for a DeepNets architecture and the torchvision
    model name otherwise; ``group`` is the split name or ``"torchvision"``.
    """

    name: str
    group: str

    @classmethod
    def parse(cls, name: str) -> Network:
        split, sep, index = name.partition("/")
        if not sep:
            try:
                check_classifier_name(name)
            except ValueError as e:
                raise ValueError(f"{e}; DeepNets networks are named '<split>/<index>'") from None
            return cls(name, "torchvision")
        if split not in SPLIT_NAMES or not index.isdigit():
            raise ValueError(f"{name!r}: expected '<split>/<index>' with a split of {list(SPLIT_NAMES)}")
        if int(index) >= len(get_split(split)):
            raise ValueError(f"{name!r}: split {split!r} has {len(get_split(split))} architectures "
                             f"(0..{len(get_split(split)) - 1})")
        return cls(name, split)

    @property
    def adaptation(self) -> str:
        return adaptation(self.name).description if self.group == "torchvision" else "DeepNets, built for 32x32"

    def build(self, seed: int) -> nn.Module:
        """The network with PyTorch's default initialisation drawn under `seed`."""
        torch.manual_seed(seed)
        if self.group != "torchvision":
            return get_split(self.group)[int(self.name.partition("/")[2])].build(num_classes=NUM_CLASSES)
        return cifar_model(self.name, num_classes=NUM_CLASSES)

    def flops(self, model: nn.Module) -> int:
        """FLOPs of one 32x32 example (2 per multiply-add), before batch statistics are on."""
        if self.group != "torchvision":
            return num_flops(get_split(self.group)[int(self.name.partition("/")[2])])
        return count_flops(model, INPUT_SHAPE)


def sample_indices(size: int, spec: int | list[int] | None, seed: int, split: str) -> list[int]:
    """Architecture indices of a split: all (None), a seeded sample of `spec` of them, or
    the given list. The sample depends on (seed, split) only, so adding or removing other
    splits from a config never changes it."""
    if spec is None:
        return list(range(size))
    if isinstance(spec, list):
        bad = [i for i in spec if not 0 <= i < size]
        if bad:
            raise ValueError(f"split {split!r} has {size} architectures; bad indices {bad}")
        return list(spec)
    if not 0 < spec <= size:
        raise ValueError(f"split {split!r}: cannot sample {spec} of {size} architectures")
    return sorted(random.Random(f"{seed}/{split}").sample(range(size), spec))


def benchmark_networks(cfg: BenchConfig) -> list[Network]:
    nets = [
        Network(f"{split}/{i}", split)
        for split, spec in cfg.splits.items()
        for i in sample_indices(len(get_split(split)), spec, cfg.seed, split)
    ]
    return nets + [Network.parse(name) for name in cfg.torchvision]


# -- meta-models ----------------------------------------------------------------------------


class MetaModelUnavailableError(RuntimeError):
    """The requested (or default) meta-model cannot be loaded; the message says what to do."""


NO_DEFAULT_MESSAGE = (
    "The default meta-model {name!r} is missing from this installation of ghn (its files should ship "
    "inside the package: reinstall it), so there is nothing to benchmark by default and no results were "
    "written. Or pass a meta-model:\n"
    "  python experiments/eval_ghn.py --config experiments/configs/bench_cifar_quick.yaml --meta-model PATH\n"
    "where PATH is a checkpoint of experiments/train_ghn.py (runs/<run>/final.pt or checkpoint.pt), a "
    "directory written by ghn.hub.save_pretrained, or a model-hub id 'org/repo'."
)


def load_meta_model(spec: str | None, device: torch.device) -> tuple[GHN, dict[str, Any]]:
    """Load a meta-model and describe where it came from.

    `spec` is a ``.pt``/``.pth`` checkpoint (a bare ``{"config", "state_dict"}`` as
    `GHN.checkpoint` writes, or a training checkpoint holding it under ``"meta_model"``),
    anything `ghn.hub.from_pretrained` accepts, or None for the shipped default.

    Raises:
        MetaModelUnavailableError: nothing loadable; the message says what to pass instead.
    """
    name = spec or hub.DEFAULT_MODEL
    path = Path(name).expanduser()
    identity: dict[str, Any] = {"source": name}
    if path.suffix in hub.LEGACY_SUFFIXES:
        try:
            meta, record = hub.load_checkpoint(path)
        except hub.MetaModelError as e:
            raise MetaModelUnavailableError(f"cannot load meta-model checkpoint {path}: {e}") from e
        identity |= {"kind": "training checkpoint" if record else "checkpoint", "sha256": hub.sha256_file(path)}
        # What training cost so far, when the checkpoint records it.
        identity |= {k: record[k] for k in ("step", "stats", "train_config") if k in record}
    else:
        try:
            meta = hub.from_pretrained(name, device="cpu")
            info = hub.load_info(name)
        except hub.ModelNotShippedError as e:
            raise MetaModelUnavailableError(NO_DEFAULT_MESSAGE.format(name=name)) from e
        except hub.MetaModelError as e:
            raise MetaModelUnavailableError(f"cannot load meta-model {name!r}: {e}") from e
        identity |= {"kind": "pretrained (ghn.hub)", "sha256": info.sha256,
                     "metadata": dataclasses.asdict(info.metadata)}
    if meta.config.num_classes != NUM_CLASSES:
        raise MetaModelUnavailableError(
            f"meta-model {name!r} predicts {meta.config.num_classes}-class heads; CIFAR-10 needs {NUM_CLASSES}"
        )
    identity |= {"config": meta.config.to_dict(), "params": sum(p.numel() for p in meta.parameters())}
    return meta.to(device).eval(), identity


# -- evaluation and training ----------------------------------------------------------------


@torch.inference_mode()
def evaluate(model: nn.Module, loader: CIFAR10Loader) -> float:
    """Top-1 accuracy on `loader` in eval mode; batch norm uses batch statistics when
    `use_batch_stats` was applied (the benchmark applies it to every network)."""
    model.eval()
    loader.set_epoch(0)  # a full pass from the first batch, whatever the loader did before
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


@dataclass
class Curve:
    """Test accuracy after each evaluated number of SGD steps, and the mean training loss
    over the steps since the previous evaluation (None at step 0)."""

    steps: list[int] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)


def _endless(loader: CIFAR10Loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:  # the loader moves to the next epoch (new order) after each pass
        yield from loader


def train_curve(
    model: nn.Module,
    train: CIFAR10Loader,
    test: CIFAR10Loader,
    steps: int,
    eval_every: int,
    opt: SGDConfig | FinetuneConfig,
    stop_at: float | None = None,
    desc: str = "SGD",
) -> Curve:
    """Train `model` with constant-rate SGD for `steps` steps, evaluating at step 0 and
    every `eval_every` steps (and at the end); stops early once the test accuracy reaches
    `stop_at`, since later steps cannot change the first step that reached it."""
    sgd = torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    curve = Curve()

    def record(step: int, losses: list[float]) -> bool:
        curve.steps.append(step)
        curve.acc.append(evaluate(model, test))
        curve.train_loss.append(statistics.fmean(losses) if losses else None)
        bar.set_postfix(acc=f"{curve.acc[-1]:.3f}")
        return stop_at is not None and curve.acc[-1] >= stop_at

    batches = _endless(train)
    with tqdm(total=steps, desc=desc, unit="step", leave=False) as bar:
        if record(0, []):
            return curve
        losses: list[float] = []
        for step in range(1, steps + 1):
            x, y = next(batches)
            model.train()
            loss = F.cross_entropy(model(x), y)
            sgd.zero_grad(set_to_none=True)
            loss.backward()
            sgd.step()
            losses.append(loss.item())
            bar.update(1)
            if step % eval_every == 0 or step == steps:
                if record(step, losses):
                    break
                losses = []
    return curve


def equivalent_sgd_steps(steps: Sequence[int], accs: Sequence[float], target: float) -> int | None:
    """The first evaluated step count whose accuracy reaches `target`; None if none does.

    `steps` must be increasing and as long as `accs` (an SGD curve evaluated every K steps,
    so the answer is exact up to K)."""
    if len(steps) != len(accs):
        raise ValueError(f"{len(steps)} steps but {len(accs)} accuracies")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError("steps must be strictly increasing")
    return next((s for s, a in zip(steps, accs) if a >= target), None)


# -- the benchmark stages -------------------------------------------------------------------


def evaluate_networks(
    nets: Sequence[Network], metas: dict[str, GHN], test: CIFAR10Loader, cfg: BenchConfig, device: torch.device
) -> list[dict[str, Any]]:
    """Accuracy of every network with random and with each meta-model's parameters.

    A network is built once: random init is evaluated first, then each meta-model
    overwrites all its parameters in turn. A failure is recorded and the run goes on, so
    one odd architecture cannot cost a long benchmark."""
    rows = []
    bar = tqdm(nets, desc="predicted vs random", unit="net")
    for net in bar:
        bar.set_postfix_str(net.name)
        row: dict[str, Any] = {"name": net.name, "group": net.group, "adaptation": net.adaptation,
                               "acc": {}, "seconds": {}}
        try:
            model = net.build(cfg.seed)
            row["params"] = sum(p.numel() for p in model.parameters())
            row["flops"] = net.flops(model)
            model = use_batch_stats(model.to(device))
            t0 = time.perf_counter()
            row["acc"]["random"] = evaluate(model, test)
            row["seconds"]["eval"] = time.perf_counter() - t0
            for method, meta in metas.items():
                t0 = time.perf_counter()
                predict(model, meta, INPUT_SHAPE)
                row["seconds"][f"predict_{method}"] = time.perf_counter() - t0
                row["acc"][method] = evaluate(model, test)
        except Exception as e:  # noqa: BLE001 - recorded in the results and counted in the table
            log.warning("%s failed: %s: %s", net.name, type(e).__name__, e)
            row["error"] = f"{type(e).__name__}: {e}"
        else:
            log.info("%s: %s", net.name, ", ".join(f"{m} {a:.1%}" for m, a in row["acc"].items()))
        rows.append(row)
    return rows


def gpt_row(
    cfg: GPTRowConfig, metas: dict[str, GHN], test: CIFAR10Loader, seed: int, device: torch.device
) -> dict[str, Any]:
    """The G.pt baseline's row (see `GPTRowConfig`): accuracy of its tiny CNN from random
    inits and after one G.pt step (means over the inits), and predicted by each meta-model."""
    gpt = load_gpt(cfg.model, str(device))
    data = load_checkpoints(cfg.data)
    t0 = time.perf_counter()
    step = one_step(gpt, data, cfg.inits, seed, "ddim", cfg.ddim_steps,
                    generator=torch.Generator(device=device).manual_seed(seed))
    row: dict[str, Any] = {
        "name": "tiny_cnn", "group": "gpt", "adaptation": "G.pt's tiny CNN (5,370 parameters)",
        "params": NUM_PARAMS, "acc": {}, "seconds": {"gpt_one_step": time.perf_counter() - t0},
        "gpt": {"model": cfg.model, "data": cfg.data, "runs": data.num_runs, "inits": cfg.inits,
                "ddim_steps": cfg.ddim_steps, "prompt_loss": step.prompt,
                "dataset_median_final_err": data.test_err[:, -1].median().item()},
    }
    model = TinyCNN().to(device)
    for method, flat in (("random", step.inits), ("gpt", step.params)):
        accs = [evaluate(load_flat_params(model, p.to(device)), test) for p in flat]
        row["acc"][method] = statistics.fmean(accs)
        row[f"{method}_per_init"] = accs
    for method, meta in metas.items():
        predict(model, meta, INPUT_SHAPE)
        row["acc"][method] = evaluate(model, test)
    log.info("G.pt tiny CNN: %s", ", ".join(f"{m} {a:.1%}" for m, a in row["acc"].items()))
    return row


def _train_loader(cfg: BenchConfig, device: torch.device) -> CIFAR10Loader:
    # Same seed for every run: predicted and random inits see exactly the same batches.
    return cifar10_loader("train", cfg.data_root, cfg.train_batch_size, seed=cfg.seed, device=device,
                          channels_last=cfg.channels_last)


def sgd_equivalence(
    rows: list[dict[str, Any]], meta: GHN, test: CIFAR10Loader, cfg: BenchConfig, device: torch.device
) -> list[dict[str, Any]]:
    """For each network of ``cfg.sgd.models``: SGD steps from random init to the meta-model's accuracy."""
    by_name = {r["name"]: r for r in rows if "error" not in r}
    out = []
    for name in cfg.sgd.models:
        net = Network.parse(name)
        t0 = time.perf_counter()
        try:
            if name in by_name:
                target = by_name[name]["acc"]["ghn"]
            else:  # not in the accuracy table: predict it here
                target = evaluate(predict(use_batch_stats(net.build(cfg.seed).to(device)), meta, INPUT_SHAPE), test)
            model = use_batch_stats(net.build(cfg.seed).to(device))
            curve = train_curve(model, _train_loader(cfg, device), test, cfg.sgd.max_steps, cfg.sgd.eval_every,
                                cfg.sgd, stop_at=target, desc=f"SGD {name}")
        except Exception as e:  # noqa: BLE001 - recorded; the stages after it still run
            log.warning("SGD comparison for %s failed: %s: %s", name, type(e).__name__, e)
            out.append({"name": name, "error": f"{type(e).__name__}: {e}"})
            continue
        steps = equivalent_sgd_steps(curve.steps, curve.acc, target)
        log.info("%s: SGD from random init reaches the meta-model's %.1f%% %s", name, 100 * target,
                 f"after {steps} steps" if steps is not None else f"in none of {cfg.sgd.max_steps} steps")
        out.append({"name": name, "ghn_acc": target, "steps": steps, "reached": steps is not None,
                    "max_steps": cfg.sgd.max_steps, "eval_every": cfg.sgd.eval_every,
                    "curve": dataclasses.asdict(curve), "seconds": time.perf_counter() - t0})
    return out


def finetune(meta: GHN, test: CIFAR10Loader, cfg: BenchConfig, device: torch.device) -> dict[str, Any]:
    """Train ``cfg.finetune.model`` from predicted and from random parameters, same batches."""
    net = Network.parse(cfg.finetune.model)
    train = _train_loader(cfg, device)
    steps = cfg.finetune.steps if cfg.finetune.steps is not None else len(train)
    curves = {}
    t0 = time.perf_counter()
    for init in ("ghn", "random"):
        model = use_batch_stats(net.build(cfg.seed).to(device))
        if init == "ghn":
            predict(model, meta, INPUT_SHAPE)
        curve = train_curve(model, _train_loader(cfg, device), test, steps, cfg.finetune.eval_every,
                            cfg.finetune, desc=f"fine-tune {net.name} from {init}")
        curves[init] = dataclasses.asdict(curve)
        log.info("fine-tuning %s from %s init: %.1f%% -> %.1f%% after %d steps", net.name, init,
                 100 * curve.acc[0], 100 * curve.acc[-1], curve.steps[-1])
    return {"name": net.name, "adaptation": net.adaptation, "steps": steps, "epoch_fraction": steps / len(train),
            "images": steps * cfg.train_batch_size, "curves": curves, "seconds": time.perf_counter() - t0}


# -- reporting ------------------------------------------------------------------------------


def summarise(rows: list[dict[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per DeepNets split (mean, std, min, max over architectures) and per torchvision model."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["name"] if r["group"] == "torchvision" else r["group"], []).append(r)
    out = {}
    for key, members in groups.items():
        ok = [r for r in members if "error" not in r]
        entry: dict[str, Any] = {"n": len(ok), "failed": len(members) - len(ok)}
        for m in methods:
            accs = [r["acc"][m] for r in ok if m in r["acc"]]
            if accs:
                entry[m] = {"mean": statistics.fmean(accs), "std": statistics.pstdev(accs),
                            "min": min(accs), "max": max(accs)}
        out[key] = entry
    return out


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _span(epoch_fraction: float) -> str:
    return "1 epoch" if math.isclose(epoch_fraction, 1) else f"{epoch_fraction:.1%} of an epoch"


def markdown(results: dict[str, Any]) -> str:
    """The tables of the benchmark as markdown."""
    cfg, meta = results["config"], results["meta_model"]
    methods = results["methods"]
    ident = f"`{meta['source']}` ({meta['kind']}"
    if meta.get("step") is not None:
        ident += f", step {meta['step']}"
    if meta.get("sha256"):
        ident += f", sha256 {meta['sha256'][:12]}"
    ident += f", {meta['params']:,} parameters)"
    test = results["test_set"]
    lines = [
        f"## {results['dataset']}: predicted parameters, no gradient step",
        "",
        f"Meta-model: {ident}.",
        f"Test images: {test['images']:,} of {CIFAR10_SIZES['test']:,} ({test['description']}). "
        f"Batch norm uses the statistics of each test batch of {cfg['batch_size']} (as GHN-2 evaluated), "
        "for every column alike. Accuracy in %; DeepNets rows: mean ± std over architectures (best).",
        "",
        "| Networks | " + " | ".join(METHOD_LABELS[m] for m in methods) + " | GHN-2 paper |",
        "|---|" + "---|" * (len(methods) + 1),
    ]
    sizes = {s: len(get_split(s)) for s in SPLIT_NAMES}
    for key, entry in results["summary"].items():
        cells = []
        for m in methods:
            s = entry.get(m)
            if s is None:
                cells.append("—")
            elif key in SPLIT_NAMES and entry["n"] > 1:
                cells.append(f"{_pct(s['mean'])} ± {_pct(s['std'])} ({_pct(s['max'])})")
            else:
                cells.append(_pct(s["mean"]))
        if key in SPLIT_NAMES:
            label = f"DeepNets {key} ({'ID' if key == 'test' else 'OOD'}, {entry['n']}/{sizes[key]} archs)"
        else:
            label = "G.pt's tiny CNN (5,370 parameters)" if key == "gpt" else f"{key} (32x32)"
        if entry["failed"]:
            label += f", {entry['failed']} failed"
        paper = PAPER_GHN2.get(key)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'—' if paper is None else paper} |")
    lines.append("")
    lines.append("GHN-2 paper: Knyazev et al. (NeurIPS 2021), all 500 test architectures and 10,000 test "
                 "images, after GPU-days of meta-training.")
    for note in results["notes"]:
        lines.append(f"- {note}")
    adaptations = sorted({(r["name"], r["adaptation"]) for r in results["networks"] if r["group"] == "torchvision"})
    if adaptations:
        lines += ["", "Torchvision adaptations to 32x32: " + "; ".join(f"{n}: {a}" for n, a in adaptations) + "."]

    if results["sgd_equivalent"]:
        sgd = cfg["sgd"]
        lines += [
            "",
            "### Equivalent SGD steps",
            "",
            f"SGD from the same random init (lr {sgd['lr']}, momentum {sgd['momentum']}, weight decay "
            f"{sgd['weight_decay']}, batch {cfg['train_batch_size']}, augmented training images), test accuracy "
            f"every {sgd['eval_every']} steps; the first evaluated step count reaching the meta-model's accuracy "
            "(paper: about 2,500 iterations for GHN-2 on CIFAR-10).",
            "",
            "| Network | GHN acc | Random-init acc | SGD steps to reach GHN acc |",
            "|---|---|---|---|",
        ]
        for s in results["sgd_equivalent"]:
            if "error" in s:
                lines.append(f"| {s['name']} | failed: {s['error']} | | |")
                continue
            steps = str(s["steps"]) if s["reached"] else f"> {s['max_steps']}"
            lines.append(f"| {s['name']} | {_pct(s['ghn_acc'])} | {_pct(s['curve']['acc'][0])} | {steps} |")

    if results["finetune"] is not None:
        lines += _finetune_lines(results["finetune"], cfg)
    lines += ["", f"Wall time {results['wall_time_s'] / 60:.1f} min on {results['machine']['cpu']} "
                  f"(torch threads: {results['machine']['torch_threads']}, load average "
                  f"{_load(results['machine']['load_average_1min'])} at start)."]
    return "\n".join(lines) + "\n"


def _finetune_lines(ft: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    ftc = cfg["finetune"]
    lines = [
        "",
        f"### Fine-tuning {ft['name']} (32x32): predicted vs random parameters",
        "",
        f"{ft['steps']} SGD steps = {ft['images']:,} training images = {_span(ft['epoch_fraction'])} (lr "
        f"{ftc['lr']}, momentum {ftc['momentum']}, weight decay {ftc['weight_decay']}, batch "
        f"{cfg['train_batch_size']}), the same batches for both; test accuracy in %.",
        "",
        "| Step | Images | From predicted | From random |",
        "|---|---|---|---|",
    ]
    g, r = ft["curves"]["ghn"], ft["curves"]["random"]
    for i, step in enumerate(g["steps"]):
        lines.append(f"| {step} | {step * cfg['train_batch_size']:,} | {_pct(g['acc'][i])} | {_pct(r['acc'][i])} |")
    return lines


def _load(average: float | None) -> str:
    return "unknown" if average is None else f"{average:.1f}"


def plot(results: dict[str, Any], path: Path) -> None:
    """Accuracy bars per split/model and method; fine-tuning curves; SGD curves against
    the meta-model's accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_bar, ax_ft, ax_sgd) = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [2.2, 1, 1]})
    summary, methods = results["summary"], results["methods"]
    keys = list(summary)
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        means = [100 * summary[k][m]["mean"] if m in summary[k] else math.nan for k in keys]
        # Error bars (std over architectures) only where a row averages several networks.
        stds = [100 * summary[k][m]["std"] if m in summary[k] and summary[k]["n"] > 1 else math.nan for k in keys]
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(keys))]
        ax_bar.bar(xs, means, width, yerr=stds, capsize=2, label=METHOD_LABELS[m])
    labels = [f"DeepNets {k}\n({summary[k]['n']} archs)" if k in SPLIT_NAMES else k for k in keys]
    ax_bar.set_xticks(range(len(keys)), labels, rotation=30, ha="right", fontsize=8)
    ax_bar.set_ylabel("test accuracy (%)")
    ax_bar.set_title(f"{results['dataset']}, no gradient step")
    ax_bar.axhline(10, color="grey", lw=0.8, ls=":")  # chance level
    ax_bar.legend(fontsize=8)

    ft = results["finetune"]
    if ft is None:
        ax_ft.set_axis_off()
        ax_ft.text(0.5, 0.5, "fine-tuning not run", ha="center", va="center", transform=ax_ft.transAxes)
    else:
        for init, curve in ft["curves"].items():
            ax_ft.plot(curve["steps"], [100 * a for a in curve["acc"]], marker="o", ms=3,
                       label="from predicted" if init == "ghn" else "from random init")
        ax_ft.set_title(f"fine-tuning {ft['name']} ({_span(ft['epoch_fraction'])})")
        ax_ft.legend(fontsize=8)
        ax_ft.set_xlabel("SGD steps")
        ax_ft.set_ylabel("test accuracy (%)")

    sgd_runs = [s for s in results["sgd_equivalent"] if "error" not in s]
    for s in sgd_runs:
        line, = ax_sgd.plot(s["curve"]["steps"], [100 * a for a in s["curve"]["acc"]], marker="o", ms=3,
                            label=f"{s['name']} SGD")
        ax_sgd.axhline(100 * s["ghn_acc"], color=line.get_color(), ls="--", lw=1)
    ax_sgd.set_title("SGD from random init vs GHN (dashed)")
    ax_sgd.set_xlabel("SGD steps")
    if sgd_runs:
        ax_sgd.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- entry point ----------------------------------------------------------------------------


def _threads(requested: int | None) -> int | None:
    """The torch thread count to use: `requested`, else 1 on an already busy machine."""
    load = load_average()
    if requested is None and load is not None and load >= (os.cpu_count() or 1):
        # Measured on the shared 2-core machine under load: 2 threads spin-wait for each
        # other's time slices and ran DeepNets forward passes 3-20x slower than 1 thread.
        log.info("the machine is busy (load average %.1f): using 1 torch thread", load)
        return 1
    return requested


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark and write its outputs; returns the results dict (also the JSON).

    Raises:
        MetaModelUnavailableError: the meta-model (default or given) cannot be loaded.
        CIFAR10NotFoundError: no CIFAR-10 source.
    """
    previous = torch.get_num_threads()
    threads = _threads(cfg.threads)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(cfg)
    finally:
        torch.set_num_threads(previous)  # callers (tests, notebooks) keep their setting


def _run(cfg: BenchConfig) -> dict[str, Any]:
    t_start = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    info = machine()
    # Meta-models first: a missing one must fail before anything expensive happens.
    meta, identity = load_meta_model(cfg.meta_model, device)
    metas, notes, baselines = {"ghn": meta}, [], {}
    for name in BASELINES:
        path = cfg.baselines.get(name)
        if path is None:
            notes.append(f"{METHOD_LABELS[name]} column not run: no checkpoint given (baselines.{name}=PATH).")
            baselines[name] = {"status": "skipped: no checkpoint in the config"}
            continue
        try:
            metas[name], baselines[name] = load_meta_model(path, device)
        except MetaModelUnavailableError as e:
            notes.append(f"{METHOD_LABELS[name]} column not run: {e}")
            baselines[name] = {"status": f"skipped: {e}"}
            log.warning("%s baseline skipped: %s", name, e)
    methods = ["ghn", "random", *[m for m in BASELINES if m in metas]]

    test_images = cfg.test_images or CIFAR10_SIZES["test"]
    # Always a stratified sample, even of all 10,000 images: the stored order is grouped by
    # class, and batch statistics over single-class batches would distort every accuracy.
    test = cifar10_loader("test", cfg.data_root, cfg.batch_size, subset=test_images, seed=cfg.seed, device=device,
                          channels_last=cfg.channels_last)
    nets = benchmark_networks(cfg)
    source = cifar10_source(cfg.data_root)
    dataset = f"CIFAR-10 test ({source['kind']} {Path(source['path']).name})"
    log.info("meta-model %s; %d networks on %d test images (%s)", identity["source"], len(nets), test_images, dataset)

    stage_seconds = {}
    t0 = time.perf_counter()
    rows = evaluate_networks(nets, metas, test, cfg, device)
    stage_seconds["predicted_vs_random"] = time.perf_counter() - t0
    missing = [p for p in (cfg.gpt.model, cfg.gpt.data) if p is not None and not Path(p).exists()]
    if cfg.gpt.model is None or cfg.gpt.data is None:
        notes.append("G.pt row not run: no G.pt given (gpt.model=PATH gpt.data=PATH).")
    elif missing:
        notes.append(f"G.pt row not run: {' and '.join(missing)} not found (train a G.pt with "
                     "experiments/collect_checkpoints.py, then experiments/train_gpt.py).")
    else:
        t0 = time.perf_counter()
        try:
            rows.append(gpt_row(cfg.gpt, metas, test, cfg.seed, device))
        except Exception as e:  # noqa: BLE001 - an optional row must not cost the stages after it
            log.warning("G.pt row failed: %s: %s", type(e).__name__, e)
            notes.append(f"G.pt row failed: {type(e).__name__}: {e}")
        else:
            methods.append("gpt")
            notes.append(f"Tiny CNN row: random and G.pt columns are means over {cfg.gpt.inits} random inits "
                         "unseen by G.pt, each given one G.pt step (DDIM) prompted with its data set's best test loss.")
        stage_seconds["gpt"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sgd = sgd_equivalence(rows, meta, test, cfg, device)
    stage_seconds["sgd_equivalent"] = time.perf_counter() - t0
    ft = None
    if cfg.finetune.steps == 0:
        notes.append("Fine-tuning not run (finetune.steps=0).")
    else:
        t0 = time.perf_counter()
        ft = finetune(meta, test, cfg, device)
        stage_seconds["finetune"] = time.perf_counter() - t0

    info["load_average_end"] = load_average()
    results = {
        "benchmark": cfg.name,
        "dataset": dataset,
        "cifar10_source": source,
        "evaluation": (f"predicted parameters, no gradient step; model.eval() with batch-norm batch statistics "
                       f"(ghn.use_batch_stats), test batch {cfg.batch_size}"),
        "started": started,
        "meta_model": identity,
        "baselines": baselines,
        "methods": methods,
        "test_set": {"images": test_images, "seed": cfg.seed,
                     "description": "all, in a seeded shuffled order" if test_images == CIFAR10_SIZES["test"]
                     else f"seeded class-stratified subset, seed {cfg.seed}"},
        "summary": summarise(rows, methods),
        "networks": rows,
        "sgd_equivalent": sgd,
        "finetune": ft,
        "notes": notes,
        "config": cfg.to_dict(),
        "machine": info,
        "stage_seconds": stage_seconds,
        "wall_time_s": time.perf_counter() - t_start,
    }
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results["outputs"] = {ext: str(out / f"{cfg.name}.{ext}") for ext in ("json", "md", "png")}
    (out / f"{cfg.name}.md").write_text(markdown(results))
    plot(results, out / f"{cfg.name}.png")
    (out / f"{cfg.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, "BenchConfig", bare=True)
    parser.add_argument("--meta-model", default=None, metavar="PATH_OR_NAME",
                        help="checkpoint, save_pretrained directory, registered name or hub id "
                             "(default: the config's meta_model, else the shipped pretrained one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = BenchConfig.load(args.config, parsed_overrides(args))
    except (OSError, ValueError, TypeError, yaml.YAMLError) as e:
        parser.error(str(e))
    if args.meta_model is not None:
        cfg.meta_model = args.meta_model
    try:
        with logging_redirect_tqdm():
            results = run(cfg)
    except (MetaModelUnavailableError, CIFAR10NotFoundError) as e:
        log.error("%s", e)
        return EXIT_NO_INPUT
    print(markdown(results))  # the final table, after the progress bars
    log.info("wrote %s", ", ".join(results["outputs"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
