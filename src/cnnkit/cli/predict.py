"""``cnnkit predict RUN IMAGE...``: predict image files with a trained run (for classification the
top-k classes). Each image is preprocessed as the run's validation images were (``DataMeta.preprocess``:
stretched to the input size for Fashion-MNIST, resized and centre-cropped for image-file datasets).

``cnnkit predict --model efficientnet_lite0 IMAGE... --top 3 [--crop center|pad|stretch]`` uses a
pretrained ImageNet model instead and prints the notes' table (``n03877845 - palace  42.87%``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF

from cnnkit.cli import CLIError
from cnnkit.data import images

BEST, LAST = "best.safetensors", "last.safetensors"  # cnnkit.train.rundir's names (a test checks)


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `cnnkit train` (an image with --model)")
    p.add_argument("images", nargs="*", help="PNG/JPEG/GIF/WebP files, any size and colour mode")
    p.add_argument("--top", type=int, default=3, help="how many classes to print per image")
    p.add_argument(
        "--invert",
        action="store_true",
        help="invert intensities (Fashion-MNIST items are light on a black background)",
    )
    p.add_argument("--checkpoint", choices=[BEST, LAST], default=BEST)
    p.add_argument(
        "--model", default=None, help="a pretrained ImageNet model (e.g. efficientnet_lite0)"
    )
    p.add_argument("--weights", default=None, help="with --model: a checkpoint file to load")
    p.add_argument(
        "--crop",
        choices=["center", "pad", "stretch"],
        default="center",
        help="with --model: center crop (as evaluated), pad to square, or stretch",
    )
    p.set_defaults(func=run)


def read_image(path: str | Path, channels: int) -> torch.Tensor:
    """Decode an image file to uint8 (C, H, W) with ``channels`` 1 (grey) or 3 (RGB), through
    cnnkit's one decoder (:func:`cnnkit.data.images.read_image`: EXIF orientation applied, 16-bit
    samples scaled, a size limit against decompression bombs)."""
    return images.read_image(path, images.mode_for_channels(channels))


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise CLIError(f"--top: expected a positive integer, got {args.top}")
    if args.model is not None:
        return run_pretrained(args, [args.run, *args.images])
    if not args.images:
        raise CLIError("expected at least one image after the run directory")
    from cnnkit.cli._common import load_run

    _, _, model, task, meta = load_run(args.run, args.checkpoint)
    failures = 0
    for path in args.images:
        try:
            image = read_image(path, meta.channels)
            x = meta.preprocess(255 - image if args.invert else image)  # the run's own
            with torch.no_grad():
                decoded = task.decode(model(x.unsqueeze(0)))[0]
        except (OSError, ValueError, RuntimeError) as exc:  # this image only; the others go on
            print(f"error: {_named(path, exc)}", file=sys.stderr)
            failures += 1
            continue
        print(path)
        for line in task.format_prediction(decoded, meta.class_names, args.top):
            print(f"  {line}")
    return 1 if failures else 0


def run_pretrained(args: argparse.Namespace, paths: list[str]) -> int:
    """Top-k ImageNet classes per image with ``cnnkit.pretrained``; bad files are reported, skipped."""
    from cnnkit.pretrained import format_predictions, list_weights, load

    if args.model not in list_weights():
        raise CLIError(
            f"--model: no pretrained weights for {args.model!r}; choose one of {list_weights()}"
        )
    pretrained = load(args.model, weights=args.weights)
    pretrained.preprocess = pretrained.preprocess.with_crop(args.crop)
    failures = 0
    for path in paths:
        try:
            x = pretrained.preprocess(TF.to_pil_image(read_image(path, 3)))
            probs = pretrained.predict(x.unsqueeze(0))
        except (OSError, ValueError, RuntimeError) as exc:  # this image only; the others go on
            print(f"error: {_named(path, exc)}", file=sys.stderr)
            failures += 1
            continue
        print(path)
        for line in format_predictions(pretrained.decode(probs, top=args.top)[0]):
            print(f"  {line}")
    return 1 if failures else 0


def _named(path: str, exc: Exception) -> str:
    """The error's message, prefixed with the image's path unless it already starts with it."""
    message = str(exc)
    return message if message.startswith(str(path)) else f"{path}: {message}"
