"""The ``ghn`` command (also ``python -m ghn``).

    ghn predict --model resnet50 [--num-classes 10] [--cifar] [--meta-model PATH_OR_NAME] --out resnet50.safetensors
    ghn models          (alias: list-models) the registered pretrained meta-models
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch


def _predict(args: argparse.Namespace) -> int:
    import torchvision
    from safetensors.torch import save_file

    from ghn import hub
    from ghn.cifar_models import adaptation, check_classifier_name, cifar_model
    from ghn.graph import GraphError

    try:
        check_classifier_name(args.model)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        meta = hub.from_pretrained(args.meta_model or hub.DEFAULT_MODEL)
    except hub.MetaModelError as e:  # every such message says what to do: show it, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"meta-model {args.meta_model or hub.DEFAULT_MODEL} loaded", file=sys.stderr)
    if args.cifar:
        model = cifar_model(args.model, num_classes=args.num_classes)
        input_shape = tuple(args.input_shape or (3, 32, 32))
    else:
        model = torchvision.models.get_model(args.model, num_classes=args.num_classes)
        input_shape = tuple(args.input_shape) if args.input_shape else None
    t1 = time.perf_counter()
    try:
        meta.predict(model, input_shape)
    except GraphError as e:  # e.g. the model's forward fails at this input size; the message says why
        print(f"error: {e}", file=sys.stderr)
        if not args.cifar:
            print("From the shell: --input-shape 3 224 224 for the model as torchvision builds it, "
                  "or --cifar to adapt it to 32x32 input.", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t1
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    metadata = {"model": args.model, "num_classes": str(args.num_classes)}
    if args.cifar:
        metadata["adaptation"] = adaptation(args.model).description
    save_file(state, str(args.out), metadata=metadata)
    n = sum(p.numel() for p in model.parameters())
    print(f"predicted {n / 1e6:.2f}M parameters of {args.model} in {seconds:.3f} s "
          f"(total {time.perf_counter() - t0:.2f} s) -> {args.out}", file=sys.stderr)
    return 0


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _models(args: argparse.Namespace) -> int:
    from ghn import hub

    models = hub.list_models()
    if not models:
        print(f"none registered: the default meta-model {hub.DEFAULT_MODEL!r} ships with ghn, so this install "
              "is broken or lacks its package data; reinstall it (pip install --force-reinstall ghn).\n"
              "Meanwhile load your own with `ghn predict --meta-model PATH_OR_ORG/REPO` or ghn.from_pretrained(...).")
        return 0
    rows = [(m.name, _size(m.size), ", ".join(f"{k}={v:g}" for k, v in m.accuracy.items()) or "-", m.description)
            for m in models]
    header = ("name", "size", "accuracy", "description")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ghn", description="Graph hypernetworks: predict the parameters of any model.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="predict the parameters of a torchvision model and save them")
    p.add_argument("--model", required=True, help="torchvision model name, e.g. resnet50")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--meta-model", default=None, help="registered name, local path or hub id (default: the shipped one)")
    p.add_argument("--cifar", action="store_true",
                   help="adapt the model to 32x32 input as make bench-cifar does (the CIFAR ResNet stem, ViT image_size=32); "
                        "the input shape defaults to 3 32 32")
    p.add_argument("--input-shape", type=int, nargs="+", default=None, help="e.g. 3 32 32 (default: the meta-model's)")
    p.add_argument("--out", required=True, help="output .safetensors file (the predicted state dict)")
    p.set_defaults(func=_predict)
    m = sub.add_parser("models", aliases=["list-models"], help="list the registered pretrained meta-models")
    m.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    with torch.inference_mode():
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
