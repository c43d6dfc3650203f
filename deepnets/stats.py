"""Summaries and plots of a sample of architectures, to compare with the paper's figures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepnets.dataset import ArchRecord
from deepnets.ops import OP_NAMES

# (column, label, unit divisor)
NUMERIC: tuple[tuple[str, str, float], ...] = (
    ("params", "params (M)", 1e6),
    ("flops_32", "GFLOPs @32", 1e9),
    ("flops_224", "GFLOPs @224", 1e9),
    ("depth", "depth", 1.0),
    ("num_nodes", "graph nodes", 1.0),
    ("n_cells", "cells", 1.0),
)


def _column(records: Sequence[ArchRecord], name: str) -> np.ndarray:
    if name == "n_cells":
        return np.array([r.config.n_cells for r in records], dtype=np.float64)
    return np.array([getattr(r, name) for r in records], dtype=np.float64)


def op_shares(records: Sequence[ArchRecord]) -> dict[str, float]:
    """Share of each op among all op instances of all networks (ops never built get 0)."""
    total = Counter()
    for r in records:
        total.update(r.op_counts)
    n = sum(total.values()) or 1
    return {op: total[op] / n for op in OP_NAMES if op != "none"}


def summary_table(records: Sequence[ArchRecord]) -> str:
    """A plain-text table: percentiles of the numeric metadata, shares of options and ops."""
    lines = [f"{len(records)} architectures", ""]
    head = f"{'':14s}{'min':>9s}{'p5':>9s}{'median':>9s}{'mean':>9s}{'p95':>9s}{'max':>9s}"
    lines.append(head)
    for name, label, unit in NUMERIC:
        x = _column(records, name) / unit
        p = np.percentile(x, [0, 5, 50, 95, 100])
        lines.append(f"{label:14s}" + "".join(f"{v:9.3g}" for v in (p[0], p[1], p[2], x.mean(), p[3], p[4])))
    lines.append("")
    n = len(records)
    shares = {
        "batch norm": sum(r.config.norm for r in records) / n,
        "stem pool": sum(r.config.stem_pool for r in records) / n,
        "darts stem": sum(r.config.stem_type == "darts" for r in records) / n,
        "2 fc layers": sum(r.config.fc_layers == 2 for r in records) / n,
        "global pool": sum(r.config.global_pool for r in records) / n,
        "C_mult 2": sum(r.config.C_mult == 2 for r in records) / n,
    }
    lines += [f"{k:14s}{v:9.1%}" for k, v in shares.items()]
    lines += ["", "op shares (of all op instances)"]
    lines += [f"  {op:14s}{share:7.1%}" for op, share in op_shares(records).items()]
    return "\n".join(lines)


def plot_distributions(records: Sequence[ArchRecord], path: str | Path, title: str) -> Path:
    """Histograms of the numeric metadata and a bar chart of op shares, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    for ax, (name, label, unit) in zip(axes.flat, NUMERIC):
        x = _column(records, name) / unit
        log = name.startswith(("params", "flops"))
        if log:
            bins = np.geomspace(max(x.min(), 1e-9), max(x.max(), 2e-9), 40)
        elif x.max() - x.min() < 40:  # small integers: one bar per value
            bins = np.arange(x.min(), x.max() + 2) - 0.5
        else:
            bins = 40
        ax.hist(x, bins=bins, color="tab:blue", alpha=0.8)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("architectures")
    ax = axes.flat[len(NUMERIC)]
    shares = op_shares(records)
    ax.barh(list(shares), list(shares.values()), color="tab:orange")
    ax.invert_yaxis()
    ax.set_xlabel("share of op instances")
    ax.tick_params(axis="y", labelsize=8)
    axes.flat[-1].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
