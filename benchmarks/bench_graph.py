"""Graph construction speed (median of repeated runs, virtual edges included) and the
memory that building the graph of a 600M-parameter model adds on top of the model.

Writes benchmarks/results/graph.json and prints a markdown table.
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

from ghn.graph import build_graph
from ghn.machine import machine

SPEED = [
    ("resnet18", (3, 32, 32)),
    ("resnet50", (3, 32, 32)),
    ("resnet18", (3, 224, 224)),
    ("resnet50", (3, 224, 224)),
    ("vit_b_16", (3, 224, 224)),
    ("swin_t", (3, 224, 224)),
    ("efficientnet_b0", (3, 224, 224)),
    ("densenet121", (3, 224, 224)),
]
HUGE = ["vit_h_14", "regnet_y_128gf"]


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field))
    return int(line.split()[1]) / 1024


def speed(name: str, shape: tuple[int, ...], runs: int) -> dict:
    model = torchvision.models.get_model(name, num_classes=10)
    build_graph(model, shape)  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        g = build_graph(model, shape)
        times.append(time.perf_counter() - t)
    return {
        "model": name, "input": list(shape), "median_ms": 1000 * statistics.median(times),
        "nodes": g.num_nodes, "edges": g.edge_index.shape[1], "virtual_edges": g.ve_index.shape[1],
        "runs": runs,
    }


def huge(name: str) -> dict:
    model = torchvision.models.get_model(name, num_classes=1000)
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    before = _rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (Linux)
    t = time.perf_counter()
    g = build_graph(model)
    seconds = time.perf_counter() - t
    return {
        "model": name, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "weights_MB": weights_mb, "seconds": seconds, "nodes": g.num_nodes,
        "peak_extra_MB": _rss_mb("VmHWM") - before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "graph.json"))
    parser.add_argument("--skip-huge", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    result = {"machine": machine(), "speed": [speed(n, s, args.runs) for n, s in SPEED]}
    if not args.skip_huge:
        result["huge"] = [huge(n) for n in HUGE]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("| model | input | graph (median ms) | nodes | virtual edges |\n|---|---|---|---|---|")
    for r in result["speed"]:
        print(f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['median_ms']:.1f} | {r['nodes']} | {r['virtual_edges']} |")
    for r in result.get("huge", []):
        print(f"\n{r['model']}: {r['params_M']:.0f}M parameters ({r['weights_MB']:.0f} MB), graph in "
              f"{r['seconds']:.2f} s, peak memory added {r['peak_extra_MB']:.0f} MB")


if __name__ == "__main__":
    main()
