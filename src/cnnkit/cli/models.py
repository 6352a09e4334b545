"""``cnnkit models``: the registry, with each model's paper input size and parameter count."""

from __future__ import annotations

import argparse

import torch

from cnnkit.models import create_model, list_models, model_info


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument(
        "--task", default=None, choices=["classify", "localize", "detect", "segment", "superres"],
        help="only the models with this output contract (default: every task's)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern, task=args.task)
    width = max((len(n) for n in names), default=5)
    print(
        f"{'model':<{width}}  {'task':<9} {'input (C,H,W)':<14} {'min':>4} {'parameters':>12}  paper"
    )
    for name in names:
        info = model_info(name)
        c, h, w = info.input_size
        with torch.device("meta"):  # counts parameters without allocating them
            params = sum(p.numel() for p in create_model(name).parameters())
        print(
            f"{name:<{width}}  {info.task:<9} {f'{c},{h},{w}':<14} {info.min_size:>4} "
            f"{params:>12,}  {info.paper}"
        )
    return 0
