"""Paired comparison of meta-models benchmarked by ``experiments/eval_ghn.py`` on the same networks.

Two meta-models' accuracies on the same architectures and test images differ far less from
network to network than the accuracies themselves (one DeepNets architecture scores 30%,
the next 42%, for both), so the per-network difference resolves what the table's means
cannot: the quick bench's mean over eight test architectures is uncertain by about ±1.3
points (a spread of 3.7 over sqrt(8)), while the paired difference of two related
meta-models on the same 24 architectures has a standard error of 0.4-0.5. The first result is
the reference; every other is compared with it, network by network, per group (DeepNets
split or torchvision):

    python experiments/compare_bench.py --set "results=[results/a.json,results/b.json]" out=results/a_vs_b

Results must come from the same test images (count, seed, batch size, CIFAR-10 source);
networks present in only one are left out and counted. Writes ``<out>.json`` and
``<out>.md`` when ``out`` is set, and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghn.overrides import add_config_arguments, load_dataclass, parsed_overrides


@dataclass
class CompareConfig:
    """What to compare.

    Attributes:
        results: ``bench_cifar.json``-style files of ``eval_ghn.py``; the first is the reference.
        method: the column to compare (``ghn``, or a baseline column such as ``mlp``).
        out: output path without suffix (None: print only).
    """

    results: list[str] = field(default_factory=list)
    method: str = "ghn"
    out: str | None = None


class IncomparableError(ValueError):
    """Two results were not measured on the same test images."""


def _test_images(result: dict[str, Any]) -> dict[str, Any]:
    """What fixes the images and batches a result's accuracies were measured on."""
    return {"test_set": {k: result["test_set"].get(k) for k in ("images", "seed")},
            "batch_size": result["config"]["batch_size"]}


def _accuracies(result: dict[str, Any], method: str) -> dict[str, tuple[str, float]]:
    """``{network: (group, accuracy in %)}`` of the networks `method` was scored on."""
    return {r["name"]: (r["group"], 100 * r["acc"][method]) for r in result["networks"]
            if r["acc"].get(method) is not None}


def compare(reference: dict[str, Any], other: dict[str, Any], method: str = "ghn") -> list[dict[str, Any]]:
    """One row per group of the networks both results scored with `method`: ``networks``,
    the two means (``reference``, ``other``, %), the mean paired difference ``diff``
    (other - reference, points), its standard error ``se`` (None for one network), and
    ``ahead`` (networks where other scored higher). A last row, group ``"all"``, pools
    every network.

    Raises:
        IncomparableError: the results used different test images or batches.
    """
    ref_images, other_images = _test_images(reference), _test_images(other)
    if "cifar10_source" in reference and "cifar10_source" in other:  # older results do not record it
        ref_images["cifar10_source"] = reference["cifar10_source"]["kind"]
        other_images["cifar10_source"] = other["cifar10_source"]["kind"]
    if ref_images != other_images:
        raise IncomparableError(f"not the same test images: {ref_images} against {other_images}; "
                                "run eval_ghn.py for both with the same test_images, seed and batch_size")
    ref, oth = _accuracies(reference, method), _accuracies(other, method)
    common = [name for name in ref if name in oth]
    groups: dict[str, list[str]] = {}
    for name in common:
        groups.setdefault(ref[name][0], []).append(name)
    rows = []
    for group, names in [*groups.items(), ("all", common)]:
        if not names or (group == "all" and len(groups) < 2):
            continue
        diffs = [oth[n][1] - ref[n][1] for n in names]
        rows.append({
            "group": group, "networks": len(names),
            "reference": statistics.fmean(ref[n][1] for n in names),
            "other": statistics.fmean(oth[n][1] for n in names),
            "diff": statistics.fmean(diffs),
            "se": statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None,
            "ahead": sum(d > 0 for d in diffs),
        })
    return rows


def _label(result: dict[str, Any], path: str) -> str:
    meta = result.get("meta_model", {})
    return f"`{meta.get('source', path)}` (sha256 {str(meta.get('sha256'))[:12]})"


def markdown(report: dict[str, Any]) -> str:
    lines = [f"## Paired comparison of `{report['method']}` accuracy (%), CIFAR-10 test",
             "", f"Reference: {report['reference']}. Test images: {report['test_images']}.", ""]
    for entry in report["comparisons"]:
        lines += [f"### {entry['other']} against the reference", "",
                  "| group | networks | reference | this | difference ± s.e. | ahead on |", "|---|---|---|---|---|---|"]
        for r in entry["rows"]:
            se = f" ± {r['se']:.2f}" if r["se"] is not None else ""
            lines.append(f"| {r['group']} | {r['networks']} | {r['reference']:.1f} | {r['other']:.1f} | "
                         f"{r['diff']:+.2f}{se} | {r['ahead']} of {r['networks']} |")
        if entry["left_out"]:
            lines.append(f"\nLeft out (scored in only one of the two): {', '.join(entry['left_out'])}.")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, "CompareConfig")
    args = parser.parse_args(argv)
    try:
        cfg = load_dataclass(CompareConfig, args.config, parsed_overrides(args))
    except ValueError as e:
        parser.error(str(e))
    if len(cfg.results) < 2:
        parser.error("results= needs two or more eval_ghn.py result files, the reference first")
    loaded = []
    for path in cfg.results:
        try:
            loaded.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            parser.error(f"cannot read {path}: {e}")
    reference = loaded[0]
    report: dict[str, Any] = {"method": cfg.method, "reference": _label(reference, cfg.results[0]),
                              "test_images": reference["test_set"]["description"], "comparisons": []}
    ref_names = set(_accuracies(reference, cfg.method))
    if not ref_names:
        parser.error(f"{cfg.results[0]} has no {cfg.method!r} accuracies; method= names a column of its table")
    for path, other in zip(cfg.results[1:], loaded[1:]):
        try:
            rows = compare(reference, other, cfg.method)
        except IncomparableError as e:
            parser.error(f"{path}: {e}")
        if not rows:
            parser.error(f"{path} scored no network that {cfg.results[0]} scored: nothing to pair")
        report["comparisons"].append({"other": _label(other, path), "path": path, "rows": rows,
                                      "left_out": sorted(ref_names ^ set(_accuracies(other, cfg.method)))})
    text = markdown(report)
    if cfg.out:
        out = Path(cfg.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=1))
        out.with_suffix(".md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
