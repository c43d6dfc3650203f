"""Collect the G.pt checkpoint data set of the tiny CIFAR-10 CNN, or summarise one.

    python experiments/collect_checkpoints.py collect --config experiments/configs/gpt_collect.yaml
    python experiments/collect_checkpoints.py collect --set num_runs=64 out_dir=runs/gpt_small
    python experiments/collect_checkpoints.py stats runs/gpt_checkpoints --plot results/gpt_losses.png

``collect`` is resumable: run the same command again after an interruption (even kill -9)
and it trains only the shards that are missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ghn.baselines.gpt import CollectConfig, collect, dataset_stats, load_checkpoints, plot_loss_distribution
from ghn.overrides import add_config_arguments, load_config, parsed_overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="collect (or resume) a data set")
    add_config_arguments(c, "CollectConfig")
    s = sub.add_parser("stats", help="print statistics of a data set and plot its loss distribution")
    s.add_argument("data_dir")
    s.add_argument("--plot", help="PNG path for the loss histogram (default: <data_dir>/losses.png)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    if args.cmd == "collect":
        try:
            cfg = CollectConfig.from_dict(load_config(args.config, parsed_overrides(args)))
        except ValueError as e:  # a malformed override or an unknown key: say which and stop
            c.error(str(e))
        out = collect(cfg)
        logging.getLogger("collect").info("data set complete in %s", out)
    else:
        data = load_checkpoints(args.data_dir)
        json.dump(dataset_stats(data), sys.stdout, indent=1)
        sys.stdout.write("\n")
        plot = Path(args.plot or Path(args.data_dir) / "losses.png")
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_loss_distribution(data, plot)
        logging.getLogger("stats").info("loss histogram written to %s", plot)


if __name__ == "__main__":
    main()
