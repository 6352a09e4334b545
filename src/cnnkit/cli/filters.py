"""``cnnkit filters``: the notes' feature-map example as a PNG (``cnnkit.viz.plot_feature_maps``)."""

from __future__ import annotations

import argparse

import numpy as np

from cnnkit.cli import CLIError


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Reproduce the notes' first convolution example: china.jpg and flower.jpg through a "
        "vertical and a horizontal 7x7 line filter with conv2d(strides=1, padding='SAME'), "
        "drawn as one PNG."
    )
    p.add_argument("--stride", type=int, default=1, help="convolution stride (default 1)")
    p.add_argument("--padding", default="same", type=str.lower, choices=["same", "valid"])
    p.add_argument(
        "--filters",
        nargs="+",
        default=["lines"],
        metavar="KIND",
        help="'lines' (the notes' two filters, default) or 'random N' (N random 7x7 filters)",
    )
    p.add_argument(
        "--pool", choices=["max", "avg", "depth"], default=None, help="also show pooled maps"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random filters")
    p.add_argument(
        "--out", default="feature_maps.png", help="PNG to write (default feature_maps.png)"
    )
    p.set_defaults(func=run)


def _filters(spec: list[str], seed: int) -> np.ndarray | None:
    from cnnkit.viz.feature_maps import random_filters

    if spec == ["lines"]:
        return None  # plot_feature_maps' default: the notes' filters, with their captions
    if len(spec) == 2 and spec[0] == "random" and spec[1].isdigit() and int(spec[1]) >= 1:
        return random_filters(int(spec[1]), seed=seed)
    raise CLIError(f"--filters {' '.join(spec)}: expected 'lines' or 'random N' with N >= 1")


def run(args: argparse.Namespace) -> int:
    if args.stride < 1:
        raise CLIError(f"--stride {args.stride}: expected a positive integer")
    filters = _filters(args.filters, args.seed)
    import matplotlib.pyplot as plt

    from cnnkit.viz.feature_maps import plot_feature_maps

    fig = plot_feature_maps(
        filters=filters, stride=args.stride, padding=args.padding.upper(), pool=args.pool,
        captions=None if filters is None else tuple(f"random filter {i + 1}" for i in range(filters.shape[3])),
        out=args.out,
    )  # fmt: skip
    grid = fig.axes[0].get_gridspec()
    assert grid is not None
    rows, columns = grid.get_geometry()
    plt.close(fig)
    pooled = f", {args.pool}-pooled maps" if args.pool else ""
    print(f"wrote {args.out}: {rows} images x {columns} panels (image, feature maps{pooled})")
    return 0
