"""Score meta-models on the exact meta-batches a training run was trained on: a paired comparison.

A run's ``log.csv`` names the architectures of every logged step's meta-batch, and its seed
fixes the image batch of every step, so any meta-model can be scored on exactly what the
run saw at those steps. Differences measured this way are paired: the architectures and
images that make one step's accuracy swing by ten points are the same for every model, so a
few hundred steps resolve tenths of a point that the quick bench (8 architectures, 256
images) cannot. Typical use: is a run improving on the meta-model it started from?

    python experiments/replay_ghn.py --set run=runs/next "meta_models=[ghn2-cifar10]"
    python experiments/replay_ghn.py --set run=runs/next "compare=[runs/other]" window=100

``compare`` adds the logged accuracy of other runs with the same data streams (same seed,
meta-batch, image batch and architecture distribution; checked on the architectures).
Writes ``<out>.csv`` (per logged step), ``<out>.json`` (per window) and prints a markdown
table of mean accuracy per window. Runs of one process whose streams start at their own
seed only: a run started with ``init_from`` a training checkpoint may continue its source's
streams, which the log does not record, and is refused.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ghn import functional_forward, hub
from ghn.overrides import add_config_arguments, load_dataclass, parsed_overrides

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_ghn import MetaModelUnavailableError, load_meta_model  # noqa: E402
from train_ghn import TrainConfig, data_streams  # noqa: E402

log = logging.getLogger("replay_ghn")


@dataclass
class ReplayConfig:
    """What to replay.

    Attributes:
        run: the training run's directory (its ``config.yaml`` and ``log.csv``).
        meta_models: meta-models to score: shipped names, ``save_pretrained`` directories,
            hub repositories or ``.pt`` checkpoints.
        compare: other runs on the same data streams whose logged accuracy joins the table.
        max_step: replay logged steps up to this one (None: all).
        window: steps per row of the table.
        out: output path without suffix (None: ``<run>/replay``).
        threads: torch threads (None: PyTorch's default).
    """

    run: str = ""
    meta_models: list[str] = field(default_factory=lambda: [hub.DEFAULT_MODEL])
    compare: list[str] = field(default_factory=list)
    max_step: int | None = None
    window: int = 250
    out: str | None = None
    threads: int | None = 1


def _read_log(run: Path) -> dict[int, dict[str, str]]:
    path = run / "log.csv"
    if not path.exists():
        raise SystemExit(f"replay: no training log at {path}; run= takes a directory written by train_ghn.py")
    with open(path) as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def _train_config(run: Path) -> TrainConfig:
    """The run's training config; refused if its data streams did not start at its own seed."""
    if not (run / "config.yaml").exists():
        raise SystemExit(f"replay: no config.yaml in {run}; run= takes a directory written by train_ghn.py")
    cfg = TrainConfig.load(str(run / "config.yaml"), [])
    if Path(str(cfg.init_from or "")).suffix in hub.LEGACY_SUFFIXES:
        raise SystemExit(f"replay: {run} started from the training checkpoint {cfg.init_from} and may continue "
                         "its data streams, which its log does not record; replay a run that started its own")
    return cfg


def _same_streams(a: TrainConfig, b: TrainConfig) -> bool:
    return all(getattr(a, k) == getattr(b, k) for k in ("seed", "meta_batch", "batch_size", "narrow", "num_archs"))


def replay(cfg: ReplayConfig) -> dict:
    """Score ``cfg.meta_models`` on the run's logged meta-batches; returns per-step rows and per-window means."""
    run = Path(cfg.run)
    rows = _read_log(run)
    train_cfg = _train_config(run)
    steps = sorted(s for s in rows if cfg.max_step is None or s <= cfg.max_step)
    if any("|" in rows[s]["archs"] for s in steps):
        raise SystemExit(f"replay: {run} was trained by several processes; only single-process runs can be replayed")
    others = {}
    for other in map(Path, cfg.compare):
        theirs = _read_log(other)
        same = _same_streams(_train_config(other), train_cfg)
        if not same or any(theirs[s]["archs"] != rows[s]["archs"] for s in steps if s in theirs):
            raise SystemExit(f"replay: {other} did not train on {run}'s data streams (seed, batches, architectures)")
        others[str(other)] = theirs
    try:
        metas = {spec: load_meta_model(spec, torch.device("cpu"))[0] for spec in cfg.meta_models}
    except MetaModelUnavailableError as e:
        raise SystemExit(f"replay: {e}") from e

    dataset, images = data_streams(train_cfg)  # rank 0's, as the run drew them
    image_iter = iter(images)
    results = []
    wanted = set(steps)
    with torch.no_grad():
        for step in tqdm(range(1, (steps[-1] if steps else 0) + 1), desc="replay", unit="step"):
            try:
                x, y = next(image_iter)
            except StopIteration:  # a new epoch of images, as in training
                image_iter = iter(images)
                x, y = next(image_iter)
            if step not in wanted:
                continue
            nets, graphs = dataset.build([int(i) for i in rows[step]["archs"].split()])
            row = {"step": step, "run": {"loss": float(rows[step]["loss"]), "acc": float(rows[step]["acc"])}}
            for spec, meta in metas.items():
                logits = [functional_forward(n, p, x) for n, p in zip(nets, meta(graphs))]
                row[spec] = {"loss": torch.stack([F.cross_entropy(z, y) for z in logits]).mean().item(),
                             "acc": torch.stack([(z.argmax(1) == y).float().mean() for z in logits]).mean().item()}
            for name, theirs in others.items():
                if step in theirs:
                    row[name] = {"loss": float(theirs[step]["loss"]), "acc": float(theirs[step]["acc"])}
            results.append(row)
    keys, sources = ["run", *cfg.meta_models, *others], [str(run), *cfg.meta_models, *others]
    windows = []
    for lo in range(0, steps[-1] if steps else 0, cfg.window):
        part = [r for r in results if lo < r["step"] <= lo + cfg.window]
        means = {}
        for key, name in zip(keys, sources):
            vals = [r[key]["acc"] for r in part if key in r]
            means[name] = 100 * sum(vals) / len(vals) if len(vals) == len(part) and part else None
        windows.append({"steps": [lo + 1, lo + cfg.window], "logged_steps": len(part), "acc": means})
    return {"config": dataclasses.asdict(cfg), "sources": sources, "keys": keys, "windows": windows, "rows": results}


def markdown(result: dict) -> str:
    names = result["sources"]
    lines = ["| steps | logged | " + " | ".join(f"`{n}`" for n in names) + " |", "|---" * (len(names) + 2) + "|"]
    for w in result["windows"]:
        cells = [f"{w['acc'][n]:.1f}" if w["acc"][n] is not None else "-" for n in names]
        lines.append(f"| {w['steps'][0]}-{w['steps'][1]} | {w['logged_steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\nMean training accuracy (%) of the predicted networks on the run's logged "
                               "meta-batches; the first column is the run's own (its weights at each step).\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, "ReplayConfig")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_dataclass(ReplayConfig, args.config, parsed_overrides(args))
    except ValueError as e:
        parser.error(str(e))
    if not cfg.run:
        parser.error("run= is required: the directory of a train_ghn.py run")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    result = replay(cfg)
    out = Path(cfg.out or Path(cfg.run) / "replay")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", *(f"{n}:{k}" for n in result["sources"] for k in ("loss", "acc"))])
        for r in result["rows"]:
            writer.writerow([r["step"], *(f"{r[k][m]:.4f}" if k in r else "" for k in result["keys"] for m in ("loss", "acc"))])
    out.with_suffix(".json").write_text(json.dumps({k: v for k, v in result.items() if k not in ("rows", "keys")}, indent=1))
    sys.stdout.write(markdown(result))
    log.info("wrote %s and %s", out.with_suffix(".csv"), out.with_suffix(".json"))


if __name__ == "__main__":
    main()
