"""Training speed of G.pt: seconds per step of the unit-token model
(experiments/configs/gpt_train_units.yaml: width 320, depth 3, batch 32) in float32 and with
bfloat16 autocast (`amp: true`), median of repeated steps, per torch thread count.

Random parameters stand in for the checkpoint data set: a step's cost does not depend on
the values. Writes benchmarks/results/gpt_train.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ghn.baselines.gpt import NUM_PARAMS, GPT
from ghn.baselines.gpt.train import TrainConfig
from ghn.machine import machine
from ghn.overrides import load_dataclass

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "gpt_train_units.yaml"


def step_seconds(cfg: TrainConfig, amp: bool, steps: int) -> float:
    """Median seconds of a training step (forward, backward, AdamW) of a fresh model."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = GPT(cfg.model)
    params = torch.randn(1024, NUM_PARAMS, generator=gen)
    model.fit_normalization(params, torch.rand(1024, generator=gen) + 1.5, params[:512], params[512:])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    times = []
    for i in range(steps + 3):  # 3 warm-up steps
        start, future = torch.randn(2, cfg.batch_size, NUM_PARAMS, generator=gen)
        losses = torch.rand(2, cfg.batch_size, generator=gen) + 1.5
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = model.loss(start, future, losses[0], losses[1], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpt_train.json"))
    args = parser.parse_args()
    cfg = load_dataclass(TrainConfig, CONFIG)
    result = {"machine": machine(), "config": str(CONFIG.name), "batch_size": cfg.batch_size, "speed": []}
    for threads in args.threads:
        torch.set_num_threads(threads)
        row = {"threads": threads}
        for amp in (False, True):
            row["bf16_s" if amp else "float32_s"] = step_seconds(cfg, amp, args.steps)
        row["speedup"] = row["float32_s"] / row["bf16_s"]
        result["speed"].append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"G.pt training step, {CONFIG.name}, batch {cfg.batch_size}, {result['machine']['cpu']}\n")
    print("| threads | float32, s/step | bf16 autocast, s/step | speed-up |\n|---|---|---|---|")
    for row in result["speed"]:
        print(f"| {row['threads']} | {row['float32_s']:.3f} | {row['bf16_s']:.3f} | {row['speedup']:.2f}x |")


if __name__ == "__main__":
    main()
