"""Meta-training throughput of a training config and where a step's time goes.

Runs the steps of ``experiments/train_ghn.py`` (same loader, images, optimizer) for a
config, with the backward pass split at the predicted parameters so that each part is
timed on its own: the gradient of the loss with respect to every predicted parameter
(backward through the networks), then from there into the meta-model. The sum is the
ordinary backward pass. Reports architecture-steps per second (M architectures trained
on one image batch each per step) and each part's share of the step, as medians over the
measured steps (after warm-up).

Writes benchmarks/results/train.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from deepnets import get_split
from deepnets.loader import MetaBatchDataset, MetaBatchLoader
from ghn import GHN, GHNConfig, functional_forward
from ghn.data import cifar10_loader
from ghn.machine import machine

REPO = Path(__file__).resolve().parents[1]
PARTS = ("data wait", "meta-model forward", "networks forward", "networks backward", "meta-model backward", "optimizer")


def measure(cfg: dict, steps: int, warmup: int, seed: int) -> dict:
    torch.manual_seed(seed)
    meta = GHN(GHNConfig.from_dict(cfg["ghn"]))
    opt = torch.optim.Adam(meta.parameters(), lr=cfg.get("lr", 1e-3), weight_decay=cfg.get("weight_decay", 1e-5))
    dataset = MetaBatchDataset(get_split("train", narrow=cfg.get("narrow", False)), cfg.get("meta_batch", 8),
                               seed=seed, input_shape=tuple(meta.config.input_shape))
    archs = iter(MetaBatchLoader(dataset, num_workers=cfg.get("workers", 2)))
    images = iter(cifar10_loader("train", cfg.get("data_root"), cfg.get("batch_size", 64), seed=seed))
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
        torch.nn.utils.clip_grad_norm_(meta.parameters(), cfg.get("clip", 5.0))
        opt.step()
        t.append(time.perf_counter())
        if step >= warmup:
            rows.append([b - a for a, b in zip(t, t[1:])])
    medians = {part: statistics.median(r[i] for r in rows) for i, part in enumerate(PARTS)}
    step_s = statistics.median(sum(r) for r in rows)
    compute = sum(medians.values()) - medians["data wait"]
    meta_s = medians["meta-model forward"] + medians["meta-model backward"]
    return {
        "steps": steps, "warmup": warmup, "meta_batch": cfg.get("meta_batch", 8), "batch_size": cfg.get("batch_size", 64),
        "median_step_s": step_s,
        "arch_steps_per_s": cfg.get("meta_batch", 8) / step_s,
        "median_s": medians,
        "meta_model_share_of_compute": meta_s / compute,
        "networks_share_of_compute": (medians["networks forward"] + medians["networks backward"]) / compute,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(REPO / "experiments" / "configs" / "ghn2_cpu.yaml"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's, as training)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    cfg = yaml.safe_load(Path(args.config).read_text())
    threads = args.threads or cfg.get("threads")
    if threads:
        torch.set_num_threads(threads)
    result = {"machine": machine(), "config_file": Path(args.config).name, "config": cfg,
              **measure(cfg, args.steps, args.warmup, seed=0)}
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


if __name__ == "__main__":
    main()
