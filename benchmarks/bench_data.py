"""Speed of the CIFAR-10 data module (ghn.data): the one-time decode of the archive,
loading from the cache afterwards, and the batch loader's throughput.

Every figure is the median of repeated runs. The machine, including its load average,
is recorded with the results: the dev machines share two cores between several people.

Writes benchmarks/results/data.json.

    .venv/bin/python benchmarks/bench_data.py [--archive PATH] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ghn.data import CIFAR10Loader, load_cifar10
from ghn.machine import load_average, machine

logger = logging.getLogger("bench_data")
REPO = Path(__file__).resolve().parents[1]

# What a fresh process pays before its first batch: interpreter, imports, cache load.
_FRESH_PROCESS = """
import json, sys, time
t0 = time.perf_counter()
import ghn.data
t1 = time.perf_counter()
ghn.data.load_cifar10("train", sys.argv[1], cache_dir=sys.argv[2])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1}))
"""


def first_decode(archive: Path, runs: int) -> dict[str, object]:
    """Decode the archive into an empty cache directory, ``runs`` times."""
    wall, cpu = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as cache_dir:
            t, c = time.perf_counter(), time.process_time()
            load_cifar10("train", archive, cache_dir=cache_dir)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return {"median_s": statistics.median(wall), "cpu_median_s": statistics.median(cpu), "runs_s": wall}


def cached_load(archive: Path, cache_dir: str, runs: int) -> dict[str, object]:
    """Load from an existing cache: in this process, and from a fresh interpreter."""
    in_process = []
    for _ in range(runs):
        t = time.perf_counter()
        load_cifar10("train", archive, cache_dir=cache_dir)
        in_process.append(time.perf_counter() - t)
    fresh, imports, loads = [], [], []
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", _FRESH_PROCESS, str(archive), cache_dir],
            check=True, capture_output=True, text=True,
        )
        fresh.append(time.perf_counter() - t)
        timing = json.loads(out.stdout.strip().splitlines()[-1])
        imports.append(timing["import_s"])
        loads.append(timing["load_s"])
    return {
        "in_process_median_s": statistics.median(in_process),
        "fresh_process_median_s": statistics.median(fresh),
        "fresh_process_import_ghn_data_median_s": statistics.median(imports),
        "fresh_process_load_median_s": statistics.median(loads),
    }


def throughput(loader: CIFAR10Loader, runs: int, threads: int) -> dict[str, object]:
    """Images per second over whole epochs (a new epoch each run) with ``threads``
    intra-op threads: on a busy machine one thread can beat two, which then contend."""
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in loader:  # first touch of the memory-mapped pages, not part of the figure
            pass
        rates = []
        for _ in range(runs):
            t = time.perf_counter()
            images = sum(len(labels) for _, labels in loader)
            rates.append(images / (time.perf_counter() - t))
    finally:
        torch.set_num_threads(default_threads)
    return {
        "batch_size": loader.batch_size, "shuffle": loader.shuffle, "augment": loader.augment,
        "torch_threads": threads, "images_per_s_median": statistics.median(rates), "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, default=REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "data.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("ghn.data").setLevel(logging.WARNING)

    info = machine()
    result: dict[str, object] = {"machine": info, "archive": str(args.archive)}
    logger.info("first decode (%d runs)...", args.runs)
    result["first_decode"] = first_decode(args.archive, args.runs)
    with tempfile.TemporaryDirectory() as cache_dir:
        load_cifar10("train", args.archive, cache_dir=cache_dir)
        logger.info("cached load...")
        result["cached_load"] = cached_load(args.archive, cache_dir, max(args.runs, 5))
        logger.info("loader throughput...")
        train, test = (load_cifar10(split, args.archive, cache_dir=cache_dir) for split in ("train", "test"))
        threads = torch.get_num_threads()
        result["loader"] = [
            throughput(CIFAR10Loader(train, 64, shuffle=True, augment=True, drop_last=True), args.runs, threads),
            throughput(CIFAR10Loader(train, 64, shuffle=True, augment=True, drop_last=True), args.runs, 1),
            throughput(CIFAR10Loader(train, 256, shuffle=True, augment=True, drop_last=True), args.runs, threads),
            throughput(CIFAR10Loader(test, 256), args.runs, threads),
        ]
    info["load_average_1min_after"] = load_average()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    decode, cached = result["first_decode"], result["cached_load"]
    logger.info("first decode: %.2f s wall, %.2f s CPU", decode["median_s"], decode["cpu_median_s"])
    logger.info(
        "cached load: %.3f s in process; fresh process %.2f s (import ghn.data %.2f s, load %.3f s)",
        cached["in_process_median_s"], cached["fresh_process_median_s"],
        cached["fresh_process_import_ghn_data_median_s"], cached["fresh_process_load_median_s"],
    )
    for row in result["loader"]:
        logger.info(
            "loader batch %d augment=%s threads=%d: %.0f images/s",
            row["batch_size"], row["augment"], row["torch_threads"], row["images_per_s_median"],
        )
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
