"""Train G.pt on a collected checkpoint data set.

    python experiments/train_gpt.py --config experiments/configs/gpt_train.yaml
    python experiments/train_gpt.py --config experiments/configs/gpt_train.yaml --resume \
        --set steps=8000 model.transformer.width=128 device=cuda
"""

from __future__ import annotations

import argparse
import logging

from ghn.overrides import add_config_arguments, load_config, parsed_overrides
from ghn.baselines.gpt.train import TrainConfig, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, "TrainConfig")
    parser.add_argument("--resume", action="store_true", help="continue from <out_dir>/state.pt if present")
    args = parser.parse_args(argv)
    try:
        cfg = TrainConfig.from_dict(load_config(args.config, parsed_overrides(args)))
    except ValueError as e:  # a malformed override or an unknown key: say which and stop
        parser.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    train(cfg, resume=args.resume)
    logging.getLogger("train_gpt").info("EMA weights in %s/ema.safetensors", cfg.out_dir)


if __name__ == "__main__":
    main()
