"""``cnnkit slide RUN IMAGE --out heatmap.png``: a classification run slid over a larger image in one
pass (the notes, ch. 14, "Fully Convolutional Networks"; OverFeat's dense evaluation).

The run's classifier (e.g. the notes' ``fashion_cnn`` trained on 28×28 items) is converted by
``cnnkit.detection.to_fully_convolutional``: its dense layers become convolutions, so on a 128×128
scene it returns a (K, S, S) grid of class scores, one per 28×28 window, in one forward pass rather
than S² crops. The image is normalized as the run's images were but **not resized** (the point is to
keep the items at the size the classifier learnt); it must be at least the training size. The heat
map PNG shows the image and the softmax probability of each class (or of the ``--top`` classes
with the highest maximum) over it.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cnnkit.cli import CLIError

if TYPE_CHECKING:
    import torch

    from cnnkit.data.datasets import DataMeta

BEST, LAST = "best.safetensors", "last.safetensors"  # cnnkit.train.rundir's names (a test checks)


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a classification run directory (e.g. fashion_cnn on 28x28 items)")
    p.add_argument("image", help="an image at least as large as the run's input size")
    p.add_argument("--out", default="heatmap.png", help="the heat-map PNG to write")
    p.add_argument(
        "--top", type=int, default=None, help="draw only the N classes with the highest maximum"
    )
    p.add_argument("--invert", action="store_true", help="invert intensities first")
    p.add_argument("--checkpoint", choices=[BEST, LAST], default=BEST)
    p.set_defaults(func=run)


def slide(model: torch.nn.Module, meta: DataMeta, image: torch.Tensor) -> torch.Tensor:
    """Class probabilities (K, S_h, S_w) of ``model`` (a classifier trained at ``meta.input_size``)
    on every window of the uint8 (C, H, W) ``image``, in one pass of its fully convolutional form.
    At the training size S_h = S_w = 1 and the values are the classifier's softmax."""
    import torch
    import torchvision.transforms.v2.functional as TF

    from cnnkit.data.datasets import match_channels
    from cnnkit.detection import to_fully_convolutional

    channels, height, width = meta.input_size
    if image.shape[-2] < height or image.shape[-1] < width:
        raise ValueError(
            f"slide: the image is {image.shape[-1]}x{image.shape[-2]}; expected at least the "
            f"run's input size {width}x{height}"
        )
    fcn = to_fully_convolutional(model, meta.input_size)
    x = TF.normalize(match_channels(image, channels).float() / 255, list(meta.mean), list(meta.std))
    with torch.no_grad():
        return fcn(x.unsqueeze(0))[0].float().softmax(0)  # K x S_h x S_w


def run(args: argparse.Namespace) -> int:
    from cnnkit.cli._common import load_run
    from cnnkit.cli.predict import read_image
    from cnnkit.viz.detection import plot_heatmaps

    _, _, model, task, meta = load_run(args.run, args.checkpoint)
    if task.name != "classify":
        raise CLIError(f"{args.run}: a {task.name} run; `cnnkit slide` takes classification runs")
    if args.top is not None and args.top < 1:
        raise CLIError(f"--top: expected a positive integer, got {args.top}")
    image = read_image(args.image, meta.channels)
    if args.invert:
        image = 255 - image
    scores = slide(model.cpu(), meta, image)
    names = list(meta.class_names)
    order = list(range(len(names)))
    if args.top is not None:
        order = scores.flatten(1).max(1).values.argsort(descending=True)[: args.top].tolist()
    picture = image.float().div(255).permute(1, 2, 0).squeeze(-1).numpy()
    plot_heatmaps(
        picture, scores[order].numpy(), [names[i] for i in order], args.out, meta.input_size[1]
    )
    _, grid_h, grid_w = scores.shape
    best = scores.flatten(1).max(1).values
    print(
        f"{args.image}: {grid_h}x{grid_w} windows of {meta.input_size[2]}x{meta.input_size[1]} "
        f"in one pass -> {args.out}"
    )
    for i in best.argsort(descending=True)[:3].tolist():
        print(f"  {names[i]:<14s} max {float(best[i]):.2%}")
    return 0
