"""``cnnkit segment RUN IMAGE... --out DIR``: segment image files with a trained ``segment`` run.

Each image is preprocessed as the run's validation images were (``DataMeta.preprocess``), its label
map predicted at the run's input size and brought back to the image's own size by nearest
neighbour. Per image ``DIR/NAME.png`` shows the image beside the colour overlay with a legend of the
classes found, and ``DIR/NAME_labels.png`` holds the label map itself (one class index per pixel,
a grey PNG). Unreadable files are reported and skipped (exit status 1).

``cnnkit segment --onnx model.onnx IMAGE... --out DIR`` does the same with a file written by
``cnnkit export`` on onnxruntime: logits out of the graph, the argmax taken by the task, as here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit.cli import CLIError
from cnnkit.cli._common import add_run_and_images

if TYPE_CHECKING:
    from PIL import Image

BEST, LAST = "best.safetensors", "last.safetensors"  # cnnkit.train.rundir's names (a test checks)
LABELS_SUFFIX = "_labels"


def register(p: argparse.ArgumentParser) -> None:
    add_run_and_images(p, "segment")
    p.add_argument("--out", required=True, help="folder for the overlays (created if needed)")
    p.add_argument("--checkpoint", choices=[BEST, LAST], default=BEST)
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the class colours")
    p.set_defaults(func=run)


def _png_writer(image: Image.Image) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        image.save(path, format="PNG")

    return write


def run(args: argparse.Namespace) -> int:
    import torch
    import torchvision.transforms.v2.functional as TF
    from torchvision.transforms import InterpolationMode

    from cnnkit.cli._common import ImageFiles, run_or_onnx
    from cnnkit.io import atomic_write
    from cnnkit.viz.segmentation import plot_overlay

    if not 0.0 <= args.alpha <= 1.0:
        raise CLIError(f"--alpha: expected a value in [0, 1], got {args.alpha}")
    paths, model, task, meta = run_or_onnx(args.run, args.images, args.onnx, args.checkpoint)
    if task.model_task != "segment":
        raise CLIError(
            f"{args.onnx or args.run}: a {task.name} run; `cnnkit segment` takes segment runs "
            "(`cnnkit predict` the others)"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = ImageFiles(paths, meta.channels)
    for path, image in files:
        with torch.no_grad():
            x = meta.preprocess(image).unsqueeze(0)
            # a run's test-time views (--tta) as `cnnkit evaluate` scores them; ONNX: the graph
            labels = task.decode(model(x) if args.onnx else task.infer(model, x))[0]
        if tuple(labels.shape) != tuple(image.shape[1:]):
            labels = TF.resize(
                labels[None].to(torch.uint8), list(image.shape[1:]), InterpolationMode.NEAREST_EXACT
            )[0]
        labels = labels.to(torch.uint8)
        name = Path(path).stem
        plot_overlay(image, labels, meta.class_names, out / f"{name}.png", alpha=args.alpha)
        label_file = out / f"{name}{LABELS_SUFFIX}.png"
        atomic_write(label_file, _png_writer(TF.to_pil_image(labels[None])))  # mode L: indices
        counts = torch.bincount(labels.reshape(-1).long(), minlength=len(meta.class_names))
        found = ", ".join(
            f"{meta.class_names[k]} {counts[k] / labels.numel():.0%}"
            for k in counts.argsort(descending=True).tolist()
            if counts[k]
        )
        print(f"{path} -> {out / f'{name}.png'} ({found})")
    return 1 if files.failures else 0
