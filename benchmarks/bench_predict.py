"""Prediction speed of a GHN-2 (hidden size 32, CIFAR-10 configuration, random weights:
only speed means anything here), graph construction included, median of repeated runs;
and peak memory of predicting ViT-H/14 beyond the model itself.

Writes benchmarks/results/predict.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
import torchvision

from deepnets import get_split
from ghn import GHN, GHNConfig
from ghn.machine import machine
from ghn.pyg import Batch

MODELS = [  # (torchvision name, input size)
    ("resnet18", 32), ("resnet50", 32), ("convnext_tiny", 32), ("efficientnet_b0", 32),
    ("vit_b_16", 224), ("swin_t", 224),
]


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1]) / 1024


def _median(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def speed(meta: GHN, runs: int) -> list[dict]:
    rows = []
    for name, size in MODELS:
        model = torchvision.models.get_model(name, num_classes=10)
        with torch.no_grad():
            s = _median(lambda: meta.predict(model, (3, size, size)), runs)
        rows.append({"model": name, "input": size, "median_s": s, "params_M": sum(p.numel() for p in model.parameters()) / 1e6})
    nets = [get_split("test")[i].build(num_classes=10) for i in range(8)]

    def meta_batch():
        with torch.no_grad():
            meta(Batch.from_data_list([meta.graph(n) for n in nets]))

    rows.append({"model": "8 DeepNets test networks (meta-batch)", "input": 32, "median_s": _median(meta_batch, runs),
                 "params_M": sum(p.numel() for n in nets for p in n.parameters()) / 1e6})
    return rows


def memory(meta: GHN, name: str) -> dict:
    model = torchvision.models.get_model(name, num_classes=1000)
    size = 224
    before = _rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (Linux)
    t = time.perf_counter()
    with torch.no_grad():
        meta.predict(model, (3, size, size))
    return {"model": name, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "seconds": time.perf_counter() - t, "peak_extra_MB": _rss_mb("VmHWM") - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "predict.json"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    meta = GHN(GHNConfig(hid=32)).eval()
    result = {"machine": machine(), "config": meta.config.to_dict(), "speed": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        result["speed"][str(threads)] = speed(meta, args.runs)
    torch.set_num_threads(max(args.threads))
    result["memory"] = memory(meta, "vit_h_14")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    heads = " | ".join(f"{t} thread(s), s" for t in args.threads)
    print(f"| model | input | params (M) | {heads} |\n|---|---|---|" + "---|" * len(args.threads))
    for i, row in enumerate(result["speed"][str(args.threads[0])]):
        times = " | ".join(f"{result['speed'][str(t)][i]['median_s']:.3f}" for t in args.threads)
        print(f"| {row['model']} | {row['input']} | {row['params_M']:.1f} | {times} |")
    m = result["memory"]
    print(f"\n{m['model']} ({m['params_M']:.0f}M parameters): predicted in {m['seconds']:.1f} s, "
          f"peak memory beyond the model {m['peak_extra_MB']:.0f} MB")


if __name__ == "__main__":
    main()
