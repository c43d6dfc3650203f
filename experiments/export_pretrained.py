"""Ship a trained meta-model inside the package: ``ghn/pretrained/<name>/`` plus its registry entry.

    python experiments/export_pretrained.py runs/ghn2_cpu/final.pt --name ghn2-cifar10 \\
        --bench results/bench_cifar.json --bench results/bench_cifar_resnet18_full.json \\
        --description "GHN-2, CIFAR-10, trained on 2 CPU cores"

Reads a training checkpoint (``checkpoint.pt``) or a bare one (``final.pt``), writes
``model.safetensors`` and ``config.json`` with `ghn.hub.save_pretrained`, recording the
recipe of every training stage and the compute (from the checkpoint) and the accuracies of
the ``bench_cifar.json`` files given, all measured on these weights: where several measured
the same network or split, the one on the most test images (then architectures) wins, and
``config.json`` says how each figure was measured. Then adds or replaces the entry in
``ghn/pretrained/registry.yaml`` (comments kept). ``--registry-dir`` writes elsewhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from deepnets import SPLIT_NAMES
from ghn import hub
from ghn.data import CIFAR10_SIZES

log = logging.getLogger("export_pretrained")


def bench_accuracy(benches: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, str]]:
    """Summary accuracies (%) of bench_cifar.json results (mean per DeepNets split, one per
    torchvision model) and how each was measured. A metric measured by several results is
    taken from the one on the most test images, then the most architectures."""
    best: dict[str, tuple[tuple[int, int], float, str]] = {}
    for bench in benches:
        images = bench["test_set"]["images"]
        on = f"all {images:,} test images" if images == CIFAR10_SIZES["test"] else f"a seeded subset of {images:,} test images"
        # The summary also holds one entry per torchvision model; those come from "networks".
        found = [(f"cifar10/deepnets-{split}", s["n"], s["ghn"]["mean"],
                  f"{'mean over ' if s['n'] > 1 else ''}{s['n']} architecture{'s' if s['n'] > 1 else ''} "
                  f"of the DeepNets {split} split, {on}")
                 for split, s in bench["summary"].items() if split in SPLIT_NAMES and "ghn" in s]
        found += [(f"cifar10/{row['name']}", 1, row["acc"]["ghn"], on)
                  for row in bench["networks"] if row["group"] == "torchvision" and "ghn" in row["acc"]]
        for metric, archs, acc, protocol in found:
            if metric not in best or (images, archs) > best[metric][0]:
                best[metric] = ((images, archs), round(100 * acc, 1), protocol)
    return {m: b[1] for m, b in best.items()}, {m: b[2] for m, b in best.items()}


def metadata(info: dict[str, Any], accuracy: dict[str, float], evaluation: dict[str, str]) -> dict[str, Any]:
    cfg, stats = info.get("train_config", {}), info.get("stats", {})
    training: dict[str, Any] = {}
    if "step" in info:  # a forked run (init_from) counts the steps of the run it started from
        training["steps"] = info["step"] + stats.get("inherited_steps", 0)
    if "stages" in info:  # each stage's recipe, oldest first
        training["stages"] = info["stages"]
    elif cfg:  # a checkpoint from before stages were recorded: only its own run's recipe is known
        training["last_stage"] = {"steps": info.get("step"), **{k: cfg[k] for k in (
            "narrow", "meta_batch", "batch_size", "lr", "weight_decay", "milestones", "clip", "seed") if k in cfg}}
    compute = {}
    if stats:
        compute = {"step_hours": round(stats["seconds"] / 3600, 2), "architectures_seen": stats["archs_seen"],
                   "images_seen": stats["images_seen"], "skipped_steps": stats["skipped"]}
    # Which architecture distributions the stages trained on (older stages may not record it).
    narrow = [st["narrow"] for st in info.get("stages", []) if "narrow" in st] or [bool(cfg.get("narrow"))]
    dist = " (narrow)" if all(narrow) else " (narrow and published; see training.stages)" if any(narrow) else ""
    return {"dataset": f"DeepNets-1M train{dist} / CIFAR-10",
            "training": training, "compute": compute, "accuracy": accuracy, "evaluation": evaluation}


def register(registry: Path, entry: dict[str, Any]) -> None:
    """Add or replace ``entry`` in the registry file, keeping its comment header."""
    text = registry.read_text() if registry.exists() else "models: []\n"
    head, sep, _ = text.partition("\nmodels:")
    if not sep and not text.startswith("models:"):
        raise SystemExit(f"{registry} has no top-level 'models:' list")
    models = [m for m in (yaml.safe_load(text) or {}).get("models") or [] if m["name"] != entry["name"]]
    body = yaml.safe_dump({"models": sorted([*models, entry], key=lambda m: m["name"])}, sort_keys=False)
    registry.write_text((head + "\n" if sep else "") + body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="training checkpoint.pt or final.pt")
    parser.add_argument("--name", default=hub.DEFAULT_MODEL, help="registered name (default: %(default)s)")
    parser.add_argument("--description", required=True, help="one line for `ghn models`")
    parser.add_argument("--bench", type=Path, action="append", default=[],
                        help="bench_cifar.json measured on these weights (repeat for several)")
    parser.add_argument("--registry-dir", type=Path, default=hub.PRETRAINED_DIR)
    parser.add_argument("--force", action="store_true",
                        help="ship --bench's accuracies even if they were measured on other weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if not args.checkpoint.is_file():
        log.error("no checkpoint at %s", args.checkpoint)
        return 2
    try:
        meta, info = hub.load_checkpoint(args.checkpoint)
    except hub.MetaModelError as e:
        log.error("%s", e)
        return 2
    benches, sha = [], hub.sha256_file(args.checkpoint)
    for path in args.bench:
        bench = json.loads(path.read_text())
        measured = bench["meta_model"].get("sha256")
        if measured != sha and not args.force:
            log.error("%s was measured on other weights (sha256 %s, this checkpoint %s): run "
                      "experiments/eval_ghn.py --meta-model %s first, or pass --force", path, measured, sha,
                      args.checkpoint)
            return 2
        benches.append(bench)
    accuracy, evaluation = bench_accuracy(benches)
    out = hub.save_pretrained(meta, args.registry_dir / args.name, metadata(info, accuracy, evaluation))
    weights = json.loads((out / hub.CONFIG_NAME).read_text())["weights"]
    summary = {k: v for k, v in accuracy.items() if k in ("cifar10/deepnets-test", "cifar10/resnet18")}
    register(args.registry_dir / hub.REGISTRY_NAME, {
        "name": args.name, "description": args.description, "sha256": weights["sha256"], "size": weights["size"],
        "accuracy": summary,
    })
    log.info("shipped %s: %s (%.1f MB), registered in %s", args.name, out, weights["size"] / 1e6,
             args.registry_dir / hub.REGISTRY_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
