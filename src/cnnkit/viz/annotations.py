"""Boxes, class names and masks drawn on images (``torchvision.utils.draw_bounding_boxes`` and
``draw_segmentation_masks``), laid out in a grid (``torchvision.utils.make_grid``) and written as one
PNG through an atomic rename. No matplotlib: Pillow encodes the PNG.

Boxes are xyxy in continuous pixel coordinates (``cnnkit.data.annotations``); a box covering pixel
columns ``i..j`` has ``x2 = j + 1``, and is drawn on its outermost pixels.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

# Matplotlib's "tab10" colours, one per class (cycled): distinct on grey Fashion-MNIST scenes.
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def draw_annotations(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str] | None = None,
    masks: torch.Tensor | None = None,
    *,
    scores: torch.Tensor | None = None,
    scale: int = 2,
    alpha: float = 0.45,
    colors: Sequence[tuple[int, int, int]] | None = None,
    captions: Sequence[str] | None = None,
) -> torch.Tensor:
    """``image`` (uint8 (C, H, W), C = 1 or 3) with masks filled and boxes outlined in their class's
    colour and captioned with the class name (and score), enlarged ``scale`` times (nearest
    neighbour, so small scenes stay legible). ``colors`` and ``captions`` (one per box) replace the
    class colours and captions (localization draws the true box green, the predicted one red).
    Returns uint8 (3, scale*H, scale*W)."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"image: {image.dtype} {tuple(image.shape)}, expected uint8 (1 or 3, H, W)"
        )
    image = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    if scale != 1:
        image = image.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    labels = torch.as_tensor(labels).reshape(-1)
    if colors is None:
        colors = [PALETTE[int(k) % len(PALETTE)] for k in labels]
    if masks is not None and len(masks):
        masks = masks.bool()
        if scale != 1:
            masks = masks.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        image = draw_segmentation_masks(image, masks, alpha=alpha, colors=list(colors))
    if len(boxes):
        # draw_bounding_boxes draws pixel x1..x2 inclusive: the last covered pixel is x2 - 1
        drawn = torch.as_tensor(boxes, dtype=torch.float32) * scale - torch.tensor([0, 0, 1, 1])
        # an empty box (x2 == x1, a predicted size of 0) is drawn as a line, not refused
        drawn[:, 2:] = torch.maximum(drawn[:, 2:], drawn[:, :2])
        if captions is None and classes is not None:
            captions = [classes[int(k)] for k in labels]
            if scores is not None:
                captions = [f"{c} {float(s):.2f}" for c, s in zip(captions, scores, strict=True)]
        image = draw_bounding_boxes(image, drawn, captions, colors=list(colors), width=1)
    return image


def annotation_grid(
    images: Sequence[torch.Tensor],
    targets: Sequence[dict[str, Any]],
    classes: Sequence[str] | None = None,
    *,
    columns: int = 4,
    scale: int = 2,
) -> torch.Tensor:
    """The images drawn by ``draw_annotations`` (targets hold ``boxes``, ``labels`` and optionally
    ``masks`` and ``scores``) in a grid of ``columns``, uint8 (3, H, W). Images of different sizes
    are padded to the largest."""
    from torchvision.utils import make_grid

    drawn = [
        draw_annotations(
            torch.as_tensor(image),
            torch.as_tensor(t["boxes"]),
            t["labels"],
            classes,
            None if t.get("masks") is None else torch.as_tensor(t["masks"]),
            scores=t.get("scores"),
            scale=scale,
        )
        for image, t in zip(images, targets, strict=True)
    ]
    if not drawn:
        raise ValueError("annotation_grid: no images")
    height = max(d.shape[1] for d in drawn)
    width = max(d.shape[2] for d in drawn)
    padded = [
        torch.nn.functional.pad(d, (0, width - d.shape[2], 0, height - d.shape[1])) for d in drawn
    ]
    return make_grid(padded, nrow=columns, padding=4, pad_value=255)


def save_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """A uint8 (3, H, W) or (1, H, W) tensor written as PNG through an atomic rename."""
    from PIL import Image

    from cnnkit.io import atomic_write_bytes

    array = image.permute(1, 2, 0).squeeze(-1).contiguous().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def save_annotation_grid(
    path: str | os.PathLike,
    images: Sequence[torch.Tensor],
    targets: Sequence[dict[str, Any]],
    classes: Sequence[str] | None = None,
    *,
    columns: int = 4,
    scale: int = 2,
) -> Path:
    """:func:`annotation_grid` written to ``path`` as a PNG, atomically."""
    return save_png(annotation_grid(images, targets, classes, columns=columns, scale=scale), path)


def preview_annotations(
    annotations: Any, path: str | os.PathLike, *, count: int = 8, columns: int = 4, scale: int = 2
) -> Path:
    """The first ``count`` images of an ``Annotations`` (files under its ``image_root``) with their
    boxes and masks, as one PNG."""
    from cnnkit.data.annotations import AnnotatedDataset

    dataset = AnnotatedDataset(annotations)
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    return save_annotation_grid(
        path,
        [image for image, _ in items],
        [target for _, target in items],
        annotations.classes,
        columns=columns,
        scale=scale,
    )
