"""``cnnkit upscale IMAGE... --scale 2|4 --out OUT``: super-resolve image files.

By default with the weights cnnkit ships (``cnnkit.pretrained.superres``: ESPCN ×2 and ×4 trained
on real photos, sha256-verified; no training needed); with ``--run RUN`` with a ``superres`` run's
weights (its scale); with ``--onnx FILE`` with a superres run exported by ``cnnkit export``, run by
onnxruntime (the same pixels as the run's, to onnxruntime's float rounding). The luminance Y goes through the model, the chroma through bicubic
interpolation. ``--out`` names the file to write for one image (its extension picks the format),
or a folder (created) that receives ``NAME_xS.png`` per image. Every file is written atomically.
An unreadable image is reported on stderr, naming the file, and the others are still upscaled
(exit status 1).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cnnkit.cli import CLIError

if TYPE_CHECKING:
    from PIL import Image

SHIPPED_SCALES = (2, 4)  # cnnkit.pretrained.weights.SUPERRES_WEIGHTS (a test checks)
BEST, LAST = "best.safetensors", "last.safetensors"  # cnnkit.train.rundir's names (a test checks)


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="PNG/JPEG/GIF/WebP/BMP/TIFF files")
    p.add_argument(
        "--scale", type=int, choices=SHIPPED_SCALES, default=None,
        help="upscaling factor of the shipped weights (default 2; with --run: the run's)",
    )  # fmt: skip
    p.add_argument("--run", default=None, help="a `cnnkit train --task superres` run directory")
    p.add_argument("--checkpoint", choices=[BEST, LAST], default=BEST, help="with --run")
    p.add_argument(
        "--onnx", default=None, metavar="FILE",
        help="a superres run exported by `cnnkit export`, run with onnxruntime",
    )  # fmt: skip
    p.add_argument(
        "--out", required=True,
        help="the file to write (one image; .png, .jpg, .webp...) or a folder for NAME_xS.png files",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.set_defaults(func=run)


class OnnxUpscaler(torch.nn.Module):
    """A superres ONNX file (``cnnkit export``) as the module ``upscale`` takes: Y (N, 1, h, w) →
    (N, 1, s·h, s·w) by onnxruntime, with the ``scale`` of its metadata. The graph takes any size
    (``cnnkit.dynamic_size``), so large images go through in tiles as on the PyTorch path."""

    def __init__(self, path: str) -> None:
        super().__init__()
        from cnnkit.deploy.onnx import KEY_PREFIX, OnnxModel

        try:
            self.onnx = OnnxModel(path)
        except (ImportError, FileNotFoundError, ValueError) as exc:
            raise CLIError(str(exc)) from None
        if self.onnx.task.model_task != "superres":
            raise CLIError(
                f"{path}: a {self.onnx.task.name} model; `cnnkit upscale --onnx` takes superres "
                "exports"
            )
        scale = self.onnx.metadata.get("scale", "")
        if not scale.isdigit() or int(scale) < 1:
            raise CLIError(
                f"{path}: metadata field '{KEY_PREFIX}scale' is {scale or 'missing'}; expected "
                "the upscaling factor (a positive integer), as `cnnkit export` writes it"
            )
        self.scale = int(scale)
        # the tiles' context (upscale_y); files exported before it was recorded fall back to MARGIN
        radius = self.onnx.metadata.get("receptive_radius", "")
        self.receptive_radius = int(radius) if radius.isdigit() else 0

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.onnx(y)


def _writer(picture: Image.Image, fmt: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        picture.save(path, format=fmt)

    return write


def _image_format(path: Path) -> str | None:
    """PIL's format name for ``path``'s extension, None when it is no image extension."""
    from PIL import Image

    return Image.registered_extensions().get(path.suffix.lower())


def run(args: argparse.Namespace) -> int:
    import torchvision.transforms.v2.functional as TF

    from cnnkit.cli._common import ImageFiles, load_run
    from cnnkit.device import pick_device
    from cnnkit.io import atomic_write
    from cnnkit.pretrained.superres import load_superres, upscale

    device = pick_device(args.device)
    if args.run is not None and args.onnx is not None:
        raise CLIError("--run and --onnx: give one of them")
    model: torch.nn.Module
    if args.onnx is not None:
        onnx_model = OnnxUpscaler(args.onnx)
        model, scale = onnx_model, onnx_model.scale
        if args.scale is not None and args.scale != scale:
            raise CLIError(f"--scale {args.scale}: {args.onnx} upscales by {scale}")
    elif args.run is not None:
        _, _, model, task, _ = load_run(args.run, args.checkpoint)
        if task.model_task != "superres":
            raise CLIError(
                f"{args.run}: a {task.name} run; `cnnkit upscale --run` takes superres runs"
            )
        scale = int(getattr(model, "scale", 0))
        if args.scale is not None and args.scale != scale:
            raise CLIError(f"--scale {args.scale}: the run {args.run} upscales by {scale}")
        model = model.to(device)
    else:
        scale = args.scale or SHIPPED_SCALES[0]
        model = load_superres(scale, device=device)
    out = Path(args.out)
    single = _image_format(out)
    if single is not None and len(args.images) > 1:
        raise CLIError(
            f"--out {out}: a file name, but {len(args.images)} images were given; "
            "give a folder for several images"
        )
    if single is None:
        out.mkdir(parents=True, exist_ok=True)
    files = ImageFiles(args.images, 3)
    written: set[Path] = set()
    for path, image in files:
        with torch.no_grad():
            big = upscale(model, image)
        if single is not None:
            target, fmt = out, single
        else:
            stem, n = f"{Path(path).stem}_x{scale}", 1
            target = out / f"{stem}.png"
            while target in written:  # two inputs of the same name from different folders
                n += 1
                target = out / f"{stem}-{n}.png"
            fmt = "PNG"
        atomic_write(target, _writer(TF.to_pil_image(big), fmt))
        written.add(target)
        print(
            f"{path} -> {target} ({image.shape[2]}x{image.shape[1]} -> "
            f"{big.shape[2]}x{big.shape[1]}, x{scale})"
        )
    return 1 if files.failures else 0
