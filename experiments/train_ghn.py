"""Meta-train a graph hypernetwork on CIFAR-10 over DeepNets-1M architectures.

    python experiments/train_ghn.py --config experiments/configs/ghn2_cpu.yaml [--set key=value ...] [--resume]
    torchrun --nproc_per_node=4 experiments/train_ghn.py --config experiments/configs/ghn2_cifar10.yaml

Each step: a meta-batch of M architectures and one batch of images; the GHN predicts
every parameter of the M networks, each network classifies the images with them
(`functional_call`), the mean loss back-propagates into the GHN. Under torchrun every
rank takes its own architectures (its own shuffling seed) and its own images; gradients
are averaged by DistributedDataParallel.

Writes into ``out_dir``: ``checkpoint.pt`` (atomically, every ``ckpt_every`` steps and at
the end; `--resume` continues from it exactly), ``log.csv``, ``curve.png`` and, at the end,
``final.pt`` (the meta-model only, ``{"config", "state_dict"}``). A resumed run may
change ``steps`` (or ``lr``): the learning rate of every later step follows the new
schedule, whether its milestones lie ahead or behind. A run never starts over an
existing one without ``--resume``. ``stop_at=N`` pauses a run
after step N (with a checkpoint, no ``final.pt``) on the schedule of ``steps``: to fit a
long run into sessions, or to compare runs at the same step. ``init_from=PATH`` starts a new
run from another run's meta-model and Adam moments with this config's recipe, to fork a
run and compare settings from the same point; with the same meta-batch, image batch, seed
and distribution (and as many processes) it continues the source's data streams, and
its stats (compute, steps) include the source's. ``init_from`` also takes a saved or
shipped meta-model (``init_from=ghn2-cifar10``, or a ``save_pretrained`` directory): its
weights, and the steps, stages and compute its ``config.json`` records, but no Adam moments
or data-stream positions, so pair it with ``warmup`` (a linear lr ramp over the first steps,
while the fresh Adam estimates its moments) and a new ``seed`` (architectures and images
the source has not been shown in that order). With only ``ghn.hid`` changed to a multiple
of the source's (``init_from=ghn2-cifar10 ghn.hid=64``) and/or ``ghn.dec_hid`` raised
(``ghn.dec_hid=128``), the source is widened first (`ghn.widen`: the same predictions, up
to a little symmetry-breaking noise for ``hid``) and Adam starts afresh. ``ema=0.99`` keeps
an exponential moving average of the meta-model's weights besides them (from the first step
of this run or of its resumption, whichever comes first) and writes it with every checkpoint
as ``ema.pt``: the averaged meta-model and the run's record (step, compute, stages, the last
marked with the decay and the number of steps averaged), which
``eval_ghn.py --meta-model`` and ``export_pretrained.py`` read as they read a checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from deepnets import get_split
from deepnets.loader import MetaBatchDataset, MetaBatchLoader
from ghn import GHN, GHNConfig, functional_forward, hub
from ghn.atomic import atomic_write
from ghn.data import CIFAR10Loader, cifar10_loader
from ghn.overrides import add_config_arguments, load_dataclass, parsed_overrides
from ghn.stopwatch import Stopwatch
from ghn.widen import widen

log = logging.getLogger("train_ghn")


@dataclass
class TrainConfig:
    """Training recipe; every field can be overridden on the command line (``--set key=value``,
    ``ghn.hid=64`` for meta-model fields)."""

    ghn: dict[str, Any] = field(default_factory=dict)  # GHNConfig fields
    narrow: bool = False  # train on the cheap "narrow" architecture distribution
    num_archs: int | None = None  # first N training architectures only (None: all)
    meta_batch: int = 8
    batch_size: int = 64
    steps: int = 234_600  # 300 epochs of CIFAR-10 at batch 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    milestones: list[float] = field(default_factory=lambda: [2 / 3, 5 / 6])  # fractions of steps
    gamma: float = 0.1
    warmup: int = 0  # steps of linear lr ramp up to lr (0: none)
    clip: float = 5.0
    amp: bool = True  # mixed precision on CUDA; ignored on CPU, where bf16 was 1.6x slower (README)
    # Images in channels-last memory format: the same loss to float rounding, and on CPU
    # the predicted networks' depthwise and dilated convolutions train several times faster.
    channels_last: bool = True
    # The standard crop-and-flip of the training images. The meta-model underfits (its networks'
    # training accuracy is about their test accuracy), and without it a continuation of the
    # shipped model lifted ResNet-18 where augmented ones lost it (docs/ghn2-cifar10-experiments.md).
    augment: bool = True
    device: str = "auto"
    data_root: str | None = None
    workers: int = 2
    threads: int | None = None  # torch intra-op threads of each process (None: PyTorch's default)
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 10
    out_dir: str = "runs/ghn2"
    stop_at: int | None = None  # pause after this step (checkpointed; --resume continues the schedule of `steps`)
    # Start from another run's meta-model and Adam moments (a training checkpoint or a
    # final.pt) with this config's schedule: forks a run to compare settings, or fine-tunes.
    # A saved or shipped meta-model (name or directory) gives its weights only.
    init_from: str | None = None
    # Decay of an exponential moving average of the weights, written as ema.pt (None: none):
    # the average of the last ~1/(1-ema) steps' weights, less noisy than the last step's.
    ema: float | None = None

    @classmethod
    def load(cls, path: str | None, overrides: list[str]) -> TrainConfig:
        try:
            cfg = load_dataclass(cls, path, overrides)  # "ghn.hid=64" reaches the meta-model section
        except ValueError as e:
            raise SystemExit(str(e)) from e
        GHNConfig.from_dict(cfg.ghn)  # fail early on a bad meta-model config
        if cfg.threads is not None and cfg.threads < 1:
            raise SystemExit(f"threads must be at least 1 (or null for PyTorch's default), got {cfg.threads}")
        for key in ("steps", "ckpt_every", "log_every", "meta_batch", "batch_size"):
            if getattr(cfg, key) < 1:
                raise SystemExit(f"{key} must be at least 1, got {getattr(cfg, key)}")
        if cfg.warmup < 0:
            raise SystemExit(f"warmup must be a number of steps, 0 or more, got {cfg.warmup}")
        if cfg.ema is not None and not 0 <= cfg.ema < 1:
            raise SystemExit(f"ema must be a decay in [0, 1) (or null for none), got {cfg.ema}")
        if cfg.stop_at is not None and not 0 < cfg.stop_at <= cfg.steps:
            raise SystemExit(f"stop_at must be a step in 1..steps={cfg.steps} (or null), got {cfg.stop_at}")
        return cfg

    def lr_at(self, step: int) -> float:
        """The learning rate of the step after `step` completed ones: ``lr`` times ``gamma``
        for every milestone (a fraction of ``steps``) reached, ramped linearly from
        ``lr / warmup`` over the first ``warmup`` steps. In closed form, so a resumed run
        that changed ``steps`` or ``lr`` follows its new schedule at once."""
        lr = self.lr * self.gamma ** sum(step >= int(f * self.steps) for f in self.milestones)
        return lr * min(1.0, (step + 1) / self.warmup) if self.warmup else lr


def _setup_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    if cfg.device == "auto":
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device_type = torch.device(cfg.device).type
    rank, world = 0, 1
    if "RANK" in os.environ:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    if device_type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device(device_type)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _save_atomic(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))  # a crash leaves the old or the new checkpoint, whole


def _plot(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    step = [int(r["step"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(step, [float(r["loss"]) for r in rows])
    a.set(xlabel="step", ylabel="training loss (mean over the meta-batch)")
    b.plot(step, [100 * float(r["acc"]) for r in rows])
    b.set(xlabel="step", ylabel="training accuracy of predicted networks, %")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def data_streams(cfg: TrainConfig, rank: int = 0, device: str | torch.device = "cpu") -> tuple[MetaBatchDataset, CIFAR10Loader]:
    """Process `rank`'s architecture meta-batches and image batches, in the order training
    draws them (from the start of a run; `experiments/replay_ghn.py` rebuilds them)."""
    seed = cfg.seed + 1000 * rank
    dataset = MetaBatchDataset(get_split("train", narrow=cfg.narrow), cfg.meta_batch, seed=seed, num_archs=cfg.num_archs,
                               input_shape=tuple(GHNConfig.from_dict(cfg.ghn).input_shape))
    images = cifar10_loader("train", cfg.data_root, cfg.batch_size, seed=seed, device=device,
                            channels_last=cfg.channels_last, augment=cfg.augment)
    return dataset, images


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Run (or with `resume`, continue) `cfg`. Returns ``final.pt``, or ``checkpoint.pt``
    when ``stop_at`` paused the run before ``steps``."""
    rank, world, device = _setup_distributed(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    ckpt_path = out / "checkpoint.pt"
    if not resume and ckpt_path.exists():
        raise SystemExit(f"{ckpt_path} exists: pass --resume to continue that run, or choose another out_dir")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    torch.manual_seed(cfg.seed)  # the same initial meta-model on every rank

    meta = GHN(GHNConfig.from_dict(cfg.ghn)).to(device)
    model = DistributedDataParallel(meta, find_unused_parameters=True) if world > 1 else meta
    opt = torch.optim.Adam(meta.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, stats = 0, _new_stats()
    source: dict[str, Any] = {}
    if cfg.init_from and not resume:
        source = _init_from(meta, opt, cfg.init_from, device)
        stats = source["stats"]
        for group in opt.param_groups:  # the moments carry over, the recipe is this config's
            group.update(weight_decay=cfg.weight_decay)
    # On every rank (the ranks' weights are equal), so that the loop needs no rank checks.
    ema = AveragedModel(meta, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema)) if cfg.ema is not None else None
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    dataset, images = data_streams(cfg, rank, device)
    archs = MetaBatchLoader(dataset, num_workers=cfg.workers)

    src_cfg = source.get("train_config", {})
    if source.get("archs") and len(source["archs"]) == world and all(
        src_cfg.get(k) == getattr(cfg, k) for k in ("meta_batch", "batch_size", "seed", "narrow", "num_archs")
    ):  # the same data streams: each rank carries on where its source rank stopped
        archs.load_state_dict(source["archs"][rank])
        images.load_state_dict(source["images"][rank])

    if resume:
        if not ckpt_path.exists():
            raise SystemExit(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if GHNConfig.from_dict(ckpt["meta_model"]["config"]) != meta.config:
            raise SystemExit(f"--resume: {ckpt_path} holds a meta-model with another config "
                             f"({ckpt['meta_model']['config']}); resume with the run's ghn.* fields")
        if len(ckpt["archs"]) != world:
            raise SystemExit(f"--resume: {ckpt_path} was written by {len(ckpt['archs'])} process(es), this run "
                             f"has {world}: resume with as many, so that every data stream continues")
        meta.load_state_dict(ckpt["meta_model"]["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])  # the learning rate itself comes from cfg.lr_at
        scaler.load_state_dict(ckpt["scaler"])
        try:
            archs.load_state_dict(ckpt["archs"][rank])
            images.load_state_dict(ckpt["images"][rank])
        except ValueError as e:
            raise SystemExit(f"--resume: {e}; keep the run's meta_batch, batch_size, seed, narrow "
                             "and num_archs") from e
        _set_rng_state(ckpt["rng"])
        step, stats = ckpt["step"], _stats(ckpt["stats"])
        if ema is not None and "ema" in ckpt:
            ema.load_state_dict(ckpt["ema"])
        elif ema is not None:
            log.info("ema: the checkpoint holds no average; it starts from the weights of step %d", step + 1)
        if rank == 0:
            _truncate_log(out / "log.csv", step)  # drop rows logged after the checkpoint
        log.info("resumed from %s at step %d", ckpt_path, step)
    elif rank == 0 and (out / "log.csv").exists():
        (out / "log.csv").unlink()

    csv_file = open(out / "log.csv", "a", newline="") if rank == 0 else None
    writer = csv.writer(csv_file) if csv_file else None
    if writer and not resume:
        writer.writerow(["step", "loss", "acc", "lr", "grad_norm", "archs_per_s", "skipped", "hours", "archs"])

    def checkpoint() -> None:
        all_archs = _gather(archs.state_dict(), world)
        all_images = _gather(images.state_dict(), world)
        if rank == 0:
            recipe = dataclasses.asdict(cfg)
            record = {"step": step, "stats": stats, "train_config": recipe, "stages": _stages(stats, recipe, step)}
            _save_atomic({
                "meta_model": meta.checkpoint(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(), "archs": all_archs, "images": all_images, "rng": _rng_state(),
                **record, **({"ema": ema.state_dict()} if ema is not None else {}),
            }, ckpt_path)
            if ema is not None:  # the averaged weights with the run's record, read like a checkpoint
                last = {**record["stages"][-1], "ema": cfg.ema, "ema_updates": int(ema.n_averaged)}
                stages = [*record["stages"][:-1], last]
                _save_atomic({"meta_model": ema.module.checkpoint(), **record, "stages": stages}, out / "ema.pt")
            csv_file.flush()
            _plot(out / "log.csv", out / "curve.png")

    end = cfg.steps if cfg.stop_at is None else cfg.stop_at
    image_iter = iter(images)
    bar = tqdm(total=cfg.steps, initial=step, disable=rank != 0, desc="meta-training", unit="step")
    t_last, step_last = time.perf_counter(), step
    with Stopwatch() as watch:
        while step < end:
            for nets, graphs in archs:
                watch.start()
                try:
                    x, y = next(image_iter)
                except StopIteration:  # the loader has moved on to the next epoch of images
                    image_iter = iter(images)
                    x, y = next(image_iter)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    params = model(graphs)
                    logits = [functional_forward(net.to(device), p, x) for net, p in zip(nets, params)]
                    loss = torch.stack([F.cross_entropy(z.float(), y) for z in logits]).mean()
                lr = cfg.lr_at(step)
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                grad_norm = torch.nn.utils.clip_grad_norm_(meta.parameters(), cfg.clip)
                # Gradients are all-reduced, so every rank sees the same norm and skips together.
                if torch.isfinite(grad_norm):
                    scaler.step(opt)
                    if ema is not None:
                        ema.update_parameters(meta)
                else:
                    stats["skipped"] += 1
                    log.warning("step %d: non-finite loss or gradient (loss %s), update skipped", step, loss.item())
                scaler.update()
                step += 1
                stats["archs_seen"] += len(nets) * world
                stats["images_seen"] += len(y) * world
                stats["seconds"] += watch.stop()  # a pause (kill -STOP) in the step is left out

                if step % cfg.log_every == 0 or step == cfg.steps:
                    acc = torch.stack([(z.argmax(1) == y).float().mean() for z in logits]).mean().item()
                    now = time.perf_counter()
                    rate = (step - step_last) * len(nets) * world / max(now - t_last, 1e-9)
                    t_last, step_last = now, step
                    arch_ids = _gather(graphs.arch_index.tolist(), world)
                    if writer:
                        writer.writerow([step, f"{loss.item():.4f}", f"{acc:.4f}", f"{lr:.2e}",
                                         f"{grad_norm.item():.3f}", f"{rate:.2f}", stats["skipped"],
                                         f"{stats['seconds'] / 3600:.4f}",
                                         "|".join(" ".join(map(str, ids)) for ids in arch_ids)])
                    bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.3f}", archs_s=f"{rate:.1f}")
                bar.update(1)
                if step % cfg.ckpt_every == 0 or step == end:
                    checkpoint()
                if step >= end:
                    break
    bar.close()
    result = out / "final.pt"
    if step < cfg.steps:
        result = ckpt_path
        if rank == 0:
            log.info("paused at step %d of %d (stop_at); --resume continues", step, cfg.steps)
    elif rank == 0:
        _save_atomic(meta.checkpoint(), result)
        log.info("done: %d steps, %.2f CPU/GPU hours, %d architectures and %d images seen",
                 step, stats["seconds"] / 3600, stats["archs_seen"], stats["images_seen"])
    if csv_file:
        csv_file.close()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def _new_stats() -> dict[str, Any]:
    """What a run has cost so far; "inherited_steps" are those of the run it was forked from,
    "stages" the recipes of that run's lineage (see `_stages`)."""
    return {"archs_seen": 0, "images_seen": 0, "seconds": 0.0, "skipped": 0, "inherited_steps": 0, "stages": []}


RECIPE = ("narrow", "num_archs", "meta_batch", "batch_size", "lr", "weight_decay", "milestones", "gamma", "warmup",
          "clip", "augment", "seed")


def _stages(stats: dict[str, Any], cfg: dict[str, Any], step: int) -> list[dict[str, Any]]:
    """The lineage of the weights at `step`: the inherited stages, then this run's recipe
    with the steps it ran ("schedule_steps" is the length its lr milestones refer to)."""
    return [*stats["stages"], {"steps": step, "schedule_steps": cfg["steps"], **{k: cfg.get(k) for k in RECIPE}}]


def _stats(saved: dict[str, Any]) -> dict[str, Any]:
    """Stats read from a checkpoint; those written before stages were recorded get one
    stage of unknown recipe for their inherited steps."""
    stats = {**_new_stats(), **saved}
    if "stages" not in saved and stats["inherited_steps"]:
        stats["stages"] = [{"steps": stats["inherited_steps"], "recipe": "not recorded"}]
    return stats


def _init_from(meta: GHN, opt: torch.optim.Optimizer, spec: str, device: torch.device) -> dict[str, Any]:
    """Load the meta-model of `spec` (and, from a training checkpoint, its Adam state).
    Returns the source's training config, loader positions and the stats to start from:
    the source's compute is part of what the new weights cost, its steps "inherited"."""
    if Path(spec).suffix not in hub.LEGACY_SUFFIXES:
        return _init_from_pretrained(meta, spec, device)
    path = Path(spec)
    if not path.exists():
        raise SystemExit(f"init_from: no checkpoint at {path}")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    state = ckpt["meta_model"] if "meta_model" in ckpt else ckpt
    widened = _load_weights(meta, GHN.from_checkpoint(state).to(device), spec)
    if "optimizer" in ckpt and not widened:
        opt.load_state_dict(ckpt["optimizer"])
    log.info("initialised from %s (step %s%s)", path, ckpt.get("step", "final"),
             "; fresh Adam moments" if widened else "")
    stats = _stats(ckpt.get("stats", {}))
    if "train_config" in ckpt:
        stats["stages"] = ckpt.get("stages") or _stages(stats, ckpt["train_config"], ckpt["step"])
    stats["inherited_steps"] += ckpt.get("step", 0)
    return {"stats": stats, **{k: ckpt[k] for k in ("train_config", "archs", "images") if k in ckpt}}


def _init_from_pretrained(meta: GHN, spec: str, device: torch.device) -> dict[str, Any]:
    """`_init_from` for a meta-model saved with `save_pretrained` (or shipped): the weights,
    and the lineage and compute its metadata records (``training.steps`` and ``stages``,
    ``compute``, as `experiments/export_pretrained.py` writes them)."""
    try:
        info = hub.load_info(spec)
        source = hub.from_pretrained(spec, device=device)
    except hub.MetaModelError as e:
        raise SystemExit(f"init_from: {e}") from e
    _load_weights(meta, source, spec)
    training, compute = info.metadata.training, info.metadata.compute
    if not compute:
        log.warning("init_from: %s records no compute; the new run counts only its own", spec)
    stats = {**_new_stats(), "archs_seen": compute.get("architectures_seen", 0),
             "images_seen": compute.get("images_seen", 0), "seconds": 3600 * compute.get("step_hours", 0.0),
             "skipped": compute.get("skipped_steps", 0), "inherited_steps": training.get("steps", 0),
             "stages": list(training.get("stages", []))}
    log.info("initialised from %s (%d steps; fresh Adam moments, data streams from this run's seed)",
             spec, stats["inherited_steps"])
    return {"stats": stats}


def _load_weights(meta: GHN, source: GHN, spec: str) -> bool:
    """Copy `source`'s weights into `meta`; when the two differ only in ``hid`` (`meta`'s a
    multiple of the source's) and/or ``dec_hid`` (`meta`'s larger), into a widened copy
    (`ghn.widen`). True if widened."""
    src, dst = source.config, meta.config
    if src == dst:
        meta.load_state_dict(source.state_dict())
        return False
    if (dataclasses.replace(src, hid=dst.hid, dec_hid=dst.dec_hid) != dst or dst.hid % src.hid
            or dst.hid < src.hid or dst.dec_hid < src.dec_hid):
        raise SystemExit(f"init_from: {spec} holds a meta-model with another config "
                         f"({src.to_dict()}); set the ghn.* fields to match it, or only ghn.hid "
                         f"to a multiple of its hid={src.hid} and/or ghn.dec_hid above its "
                         f"dec_hid={src.dec_hid} to widen it")
    grown = widen(source, dst.hid if dst.hid != src.hid else None,
                  dec_hid=dst.dec_hid if dst.dec_hid != src.dec_hid else None)
    meta.load_state_dict(grown.state_dict())
    log.info("init_from: widened %s from hid %d / dec_hid %d to %d / %d (hid: Net2Net copies plus 1%% noise; "
             "dec_hid: new decoder features starting at 0)", spec, src.hid, src.dec_hid, dst.hid, dst.dec_hid)
    return True


def _truncate_log(path: Path, step: int) -> None:
    if not path.exists():
        return
    with open(path) as f:
        rows = list(csv.reader(f))
    if not rows:  # killed before its header reached the disk
        return
    kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(kept)


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, "TrainConfig", bare=True)
    parser.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoint.pt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    train(TrainConfig.load(args.config, parsed_overrides(args)), resume=args.resume)


if __name__ == "__main__":
    main()
