"""Meta-training throughput of a training config and where a step's time goes.

Runs the steps of ``experiments/train_ghn.py`` (same loader, images, optimizer) for a
config, with the backward pass split at the predicted parameters so that each part is
timed on its own: the gradient of the loss with respect to every predicted parameter
(backward through the networks), then from there into the meta-model. The sum is the
ordinary backward pass. Reports architecture-steps per second (M architectures trained
on one image batch each per step) and each part's share of the step, as medians over the
measured steps (after warm-up). Then the same steps' forward and backward passes once with
contiguous and once with channels-last images, in alternating order on the same
meta-batches, for the speed-up of ``channels_last`` (a paired ratio, robust to a busy machine).

    python benchmarks/bench_train.py                                   # ghn2_cpu.yaml as is
    python benchmarks/bench_train.py --set narrow=false threads=2 --out benchmarks/results/x.json

Writes benchmarks/results/train.json (or ``--out``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from deepnets.loader import MetaBatchLoader
from ghn import GHN, GHNConfig, functional_forward
from ghn.machine import machine
from ghn.overrides import add_config_arguments, parsed_overrides

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))  # the training script's own config class, defaults and checks
from train_ghn import TrainConfig, data_streams  # noqa: E402
PARTS = ("data wait", "meta-model forward", "networks forward", "networks backward", "meta-model backward", "optimizer")


def _start(cfg: TrainConfig) -> tuple[GHN, Iterator, Iterator]:
    """The meta-model training would start from, and iterators over its first meta-batches and images."""
    torch.manual_seed(cfg.seed)
    meta = GHN(GHNConfig.from_dict(cfg.ghn))
    dataset, image_loader = data_streams(cfg)
    return meta, iter(MetaBatchLoader(dataset, num_workers=cfg.workers)), iter(image_loader)


def measure(cfg: TrainConfig, steps: int, warmup: int) -> dict:
    meta, archs, images = _start(cfg)
    opt = torch.optim.Adam(meta.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rows = []
    for step in range(warmup + steps):
        t = [time.perf_counter()]
        nets, graphs = next(archs)
        x, y = next(images)
        t.append(time.perf_counter())
        params = meta(graphs)
        t.append(time.perf_counter())
        leaves = [{k: p.detach().requires_grad_() for k, p in d.items()} for d in params]
        loss = torch.stack([F.cross_entropy(functional_forward(n, p, x), y) for n, p in zip(nets, leaves)]).mean()
        t.append(time.perf_counter())
        flat = [p for d in leaves for p in d.values()]
        grads = torch.autograd.grad(loss, flat, allow_unused=True)
        t.append(time.perf_counter())
        outs = [p for d in params for p in d.values()]
        used = [(o, g) for o, g in zip(outs, grads) if g is not None]
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward([o for o, _ in used], [g for _, g in used])
        t.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(meta.parameters(), cfg.clip)
        opt.step()
        t.append(time.perf_counter())
        if step >= warmup:
            rows.append([b - a for a, b in zip(t, t[1:])])
    medians = {part: statistics.median(r[i] for r in rows) for i, part in enumerate(PARTS)}
    step_s = statistics.median(sum(r) for r in rows)
    compute = sum(medians.values()) - medians["data wait"]
    meta_s = medians["meta-model forward"] + medians["meta-model backward"]
    return {
        "steps": steps, "warmup": warmup, "meta_batch": cfg.meta_batch, "batch_size": cfg.batch_size,
        "median_step_s": step_s,
        "arch_steps_per_s": cfg.meta_batch / step_s,
        "median_s": medians,
        "meta_model_share_of_compute": meta_s / compute,
        "networks_share_of_compute": (medians["networks forward"] + medians["networks backward"]) / compute,
    }


def memory_format_speedup(cfg: TrainConfig, steps: int, warmup: int) -> dict:
    """Median forward + backward time of the same meta-batches with contiguous and with
    channels-last images (no optimizer step, so both formats see the same meta-model)."""
    meta, archs, images = _start(dataclasses.replace(cfg, channels_last=False))
    times: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    for step in range(warmup + steps):
        nets, graphs = next(archs)
        x, y = next(images)
        runs = [("contiguous", x), ("channels_last", x.contiguous(memory_format=torch.channels_last))]
        for name, xs in runs if step % 2 else runs[::-1]:
            t = time.perf_counter()
            meta.zero_grad(set_to_none=True)
            params = meta(graphs)
            torch.stack([F.cross_entropy(functional_forward(n, p, xs), y) for n, p in zip(nets, params)]).mean().backward()
            if step >= warmup:
                times[name].append(time.perf_counter() - t)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    return {"steps": steps, "median_s": medians, "speedup": medians["contiguous"] / medians["channels_last"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_arguments(parser, "TrainConfig")  # e.g. --set narrow=false threads=2
    parser.set_defaults(config=str(REPO / "experiments" / "configs" / "ghn2_cpu.yaml"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    overrides = parsed_overrides(args)
    cfg = TrainConfig.load(args.config, overrides)
    if cfg.threads:  # as training sets them (None: PyTorch's default)
        torch.set_num_threads(cfg.threads)
    result = {"machine": machine(), "config_file": Path(args.config).name, "overrides": overrides,
              "config": dataclasses.asdict(cfg),
              **measure(cfg, args.steps, args.warmup),
              "memory_format": memory_format_speedup(cfg, args.steps, args.warmup)}
    result["machine"]["load_average_1min_end"] = machine()["load_average_1min"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    step = result["median_step_s"]
    print(f"{result['config_file']}: {result['arch_steps_per_s']:.2f} architecture-steps/s "
          f"(median step {step:.2f} s, M={result['meta_batch']}, B={result['batch_size']})\n")
    print("| part | median s | share of step |\n|---|---|---|")
    for part, s in result["median_s"].items():
        print(f"| {part} | {s:.3f} | {100 * s / step:.0f}% |")
    print(f"\nmeta-model (forward + backward): {100 * result['meta_model_share_of_compute']:.0f}% of compute; "
          f"networks: {100 * result['networks_share_of_compute']:.0f}%")
    formats = result["memory_format"]
    print(f"forward + backward with contiguous / channels-last images: {formats['median_s']['contiguous']:.2f} / "
          f"{formats['median_s']['channels_last']:.2f} s (speed-up {formats['speedup']:.2f}x; "
          f"the config uses {'channels-last' if cfg.channels_last else 'contiguous'})")


if __name__ == "__main__":
    main()
