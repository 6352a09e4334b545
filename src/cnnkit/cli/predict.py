"""``cnnkit predict RUN IMAGE...``: predict image files with a trained run (for classification the
top-k classes). With ``--out DIR`` a task that draws its predictions (``draw_prediction``: localization's
box) writes each image with its prediction drawn as ``DIR/NAME.png``. Each image is preprocessed as the run's validation images were (``DataMeta.preprocess``:
stretched to the input size for Fashion-MNIST, resized and centre-cropped for image-file datasets).

``cnnkit predict --model efficientnet_lite0 IMAGE... --top 3 [--crop center|pad|stretch]`` uses a
pretrained ImageNet model instead and prints the notes' table (``n03877845 - palace  42.87%``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torchvision.transforms.v2.functional as TF

from cnnkit.cli import CLIError
from cnnkit.data import images

if TYPE_CHECKING:
    from cnnkit.data.datasets import DataMeta
    from cnnkit.tasks import Task

BEST, LAST = "best.safetensors", "last.safetensors"  # cnnkit.train.rundir's names (a test checks)


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run", nargs="?", default=None,
        help="run directory written by `cnnkit train` (an image with --model or --onnx)",
    )  # fmt: skip
    p.add_argument("images", nargs="*", help="PNG/JPEG/GIF/WebP files, any size and colour mode")
    p.add_argument("--top", type=int, default=3, help="how many classes to print per image")
    p.add_argument(
        "--invert",
        action="store_true",
        help="invert intensities (Fashion-MNIST items are light on a black background)",
    )
    p.add_argument("--checkpoint", choices=[BEST, LAST], default=BEST)
    p.add_argument(
        "--out", default=None, help="folder for the images with their prediction drawn (localize)"
    )
    p.add_argument(
        "--model", default=None, help="a pretrained ImageNet model (e.g. efficientnet_lite0)"
    )
    p.add_argument(
        "--onnx", default=None, metavar="FILE",
        help="an ONNX file written by `cnnkit export`, run with onnxruntime",
    )  # fmt: skip
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
        return run_pretrained(args, [p for p in (args.run, *args.images) if p is not None])
    from cnnkit.cli._common import run_or_onnx

    paths, model, task, meta = run_or_onnx(args.run, args.images, args.onnx, args.checkpoint)
    return predict_files(args, paths, model, task, meta)


def predict_files(
    args: argparse.Namespace, paths: list[str], model: Any, task: Task, meta: DataMeta
) -> int:
    """Preprocess each file as the run's validation images (``meta.preprocess``), run ``model`` (a
    PyTorch module or an ``OnnxModel``: raw outputs either way), print the task's lines."""
    if args.out is not None and not task.draws_predictions:
        raise CLIError(f"--out: the {task.name} task draws no predictions; predictions are printed")
    written: set[str] = set()
    failures = 0
    for path in paths:
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
        if args.out is not None:
            print(
                f"  drawn: {save_drawing(task.draw_prediction(image, decoded, meta.class_names), args.out, path, written)}"
            )
    return 1 if failures else 0


def save_drawing(
    image: torch.Tensor, folder: str | Path, source: str | Path, taken: set[str]
) -> Path:
    """Write a drawn prediction (uint8 (3, H, W)) as ``folder/NAME.png``, NAME the source file's
    stem, made unique among this command's outputs (``NAME-2.png`` ...)."""
    from cnnkit.viz.annotations import save_png

    stem, n = Path(source).stem, 1
    name = f"{stem}.png"
    while name in taken:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return save_png(image, Path(folder) / name)


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
