"""Command line: ``python -m deepnets {generate,stats} ...`` (see ``--help``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from deepnets.dataset import describe_split, export_split, read_records
from deepnets.generator import SPLIT_NAMES, get_split
from deepnets.stats import plot_distributions, summary_table

log = logging.getLogger("deepnets")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deepnets", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def split_args(q: argparse.ArgumentParser, n_default: int | None) -> None:
        q.add_argument("--split", choices=SPLIT_NAMES, default="test")
        q.add_argument("--narrow", action="store_true", help="cheap variant (train and val only)")
        q.add_argument("--n", type=int, default=n_default,
                       help=f"number of architectures (default: {n_default or 'the whole split'})")
        q.add_argument("--start", type=int, default=0, help="index of the first architecture")
        q.add_argument("--workers", type=int, default=2, help="processes computing metadata")

    gen = sub.add_parser("generate", help="export a split with metadata to JSON lines")
    split_args(gen, n_default=None)
    gen.add_argument("--out", type=Path, required=True, help="output .jsonl file")

    st = sub.add_parser("stats", help="print and plot the distributions of a split")
    split_args(st, n_default=1000)
    st.add_argument("--from", dest="source", type=Path, default=None,
                    help="read records from an exported file instead of generating them")
    st.add_argument("--out-dir", type=Path, default=Path("."), help="where to save the PNG")
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "stats" and args.source is not None:
        exported = read_records(args.source)
        records, name = exported.records, exported.header["split"]
    else:
        split = get_split(args.split, narrow=args.narrow)
        name = split.name
        if args.command == "generate":
            path = export_split(split, args.out, n=args.n, start=args.start, workers=args.workers)
            log.info("wrote %s", path)
            return
        records = list(describe_split(split, n=args.n, start=args.start, workers=args.workers))
    print(summary_table(records))
    png = plot_distributions(records, args.out_dir / f"deepnets_{name}_stats.png",
                             title=f"DeepNets split '{name}', {len(records)} architectures")
    log.info("saved %s", png)


if __name__ == "__main__":
    main()
