"""Meta-batch loader throughput: architectures per second built into module + graph.

Runs ``deepnets.loader.MetaBatchLoader`` with 2 workers over the train split (published
distribution, and the narrow one a CPU meta-training config uses), several times, and
reports the median steady-state rate (after warm-up meta-batches, which cover worker
start-up and the filling of the block caches that a training run keeps warm for hours)
and the rate including start-up. It also measures, in one process and one thread, the
CPU time of each stage per architecture, to show where the time goes.

Writes benchmarks/results/deepnets_loader.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import time
import warnings
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import torch
from ghn.machine import machine

from deepnets import NetBuilder, get_split
from deepnets.loader import MetaBatchDataset, MetaBatchLoader


def loader_rate(split_name: str, narrow: bool, meta_batch: int, batches: int, warmup: int, workers: int, seed: int) -> dict:
    """Rates over ``batches`` meta-batches after ``warmup`` ones (worker start-up, and the
    block caches filling: a few hundred distinct blocks cover the whole split)."""
    ds = MetaBatchDataset(get_split(split_name, narrow=narrow), meta_batch, seed=seed)
    loader = MetaBatchLoader(ds, num_workers=workers)
    start = time.perf_counter()
    first = start  # replaced after the warm-up meta-batches
    for n, _ in enumerate(loader, start=1):
        if n == warmup:
            first = time.perf_counter()
        if n == warmup + batches:
            break
    end = time.perf_counter()
    return {
        "steady_archs_per_s": batches * meta_batch / (end - first),
        "with_startup_archs_per_s": (warmup + batches) * meta_batch / (end - start),
    }


def stage_costs(split_name: str, narrow: bool, meta_batch: int, batches: int) -> dict[str, float]:
    """CPU milliseconds per architecture of each stage, in this process, one thread.

    A worker samples the architectures, builds them (to trace them) and builds their
    graphs, then pickles the configs and graph batch ("send"); the main process unpickles
    them ("receive") and builds the modules again ("build (main)"), as the loader does.
    """
    ds = MetaBatchDataset(get_split(split_name, narrow=narrow), meta_batch)
    split, main_builder = ds.source, NetBuilder(init=False)
    # Warm up as a long-running worker is: its block and parameter-count caches are full.
    for i in range(300):
        cfg = split[20_000 + i]
        main_builder.build(cfg)
        ds.graphs(ds.modules([cfg]), [i])
    cost = dict.fromkeys(("sample", "build (worker)", "graph", "send", "receive", "build (main)"), 0.0)
    clock = time.process_time
    for b in range(batches):
        indices = [10_000 + b * meta_batch + k for k in range(meta_batch)]
        t = clock()
        configs = [split[i] for i in indices]
        t1 = clock()
        nets = ds.modules(configs)
        t2 = clock()
        graphs = ds.graphs(nets, indices)
        t3 = clock()
        data = ForkingPickler.dumps((configs, graphs))
        t4 = clock()
        received, _ = pickle.loads(data)
        t5 = clock()
        for cfg in received:
            main_builder.build(cfg)
        t6 = clock()
        for key, dt in zip(cost, (t1 - t, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
            cost[key] += 1000 * dt / (batches * meta_batch)
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=40, help="meta-batches timed per run")
    parser.add_argument("--warmup", type=int, default=40, help="meta-batches before timing starts")
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "deepnets_loader.json"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    result = {
        "machine": machine(), "workers": args.workers, "meta_batch": args.meta_batch,
        "warmup_batches": args.warmup, "timed_batches": args.batches, "loader": [],
    }
    for narrow in (False, True):
        runs = [
            loader_rate("train", narrow, args.meta_batch, args.batches, args.warmup, args.workers, seed=run)
            for run in range(args.runs)
        ]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # like a DataLoader worker
        stages = stage_costs("train", narrow, args.meta_batch, batches=6)
        torch.set_num_threads(threads)
        result["loader"].append({
            "split": get_split("train", narrow=narrow).name,
            "runs": runs,
            "median_steady_archs_per_s": statistics.median(r["steady_archs_per_s"] for r in runs),
            "median_with_startup_archs_per_s": statistics.median(r["with_startup_archs_per_s"] for r in runs),
            "cpu_ms_per_arch": stages,
        })
    result["machine"]["load_average_1min_end"] = machine()["load_average_1min"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))

    stages = list(result["loader"][0]["cpu_ms_per_arch"])
    print(f"{args.workers} workers, meta-batch {args.meta_batch}, load average "
          f"{result['machine']['load_average_1min']} -> {result['machine']['load_average_1min_end']}\n")
    print("| split | archs/s (steady, median) | archs/s (with start-up) | "
          + " | ".join(f"{s} ms" for s in stages) + " |")
    print("|---|---|---|" + "---|" * len(stages))
    for r in result["loader"]:
        print(f"| {r['split']} | {r['median_steady_archs_per_s']:.1f} | {r['median_with_startup_archs_per_s']:.1f} | "
              + " | ".join(f"{r['cpu_ms_per_arch'][s]:.1f}" for s in stages) + " |")


if __name__ == "__main__":
    main()
