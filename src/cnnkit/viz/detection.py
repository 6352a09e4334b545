"""Pictures of detection: boxes drawn on images (``torchvision.utils.draw_bounding_boxes``, no
matplotlib), precision-recall curves per class, and the class heat maps of a classifier slid over a
scene (matplotlib, imported inside the functions that plot). Files go through
``cnnkit.io.atomic_write_bytes``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes, make_grid

from cnnkit.io import atomic_write_bytes

#: one colour per class, cycled (matplotlib's tab10, as hex so no matplotlib is needed)
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def to_uint8_rgb(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(H, W), (H, W, C) floats in [0, 1] or a uint8 (C, H, W) tensor → uint8 (3, H, W)."""
    if isinstance(image, np.ndarray):
        array = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
        tensor = torch.from_numpy(array)
        tensor = tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    else:
        tensor = image
    if tensor.dtype != torch.uint8 or tensor.dim() != 3:
        raise ValueError(
            f"to_uint8_rgb: expected a uint8 (C, H, W) tensor or a [0, 1] array, got "
            f"{tensor.dtype} of shape {tuple(tensor.shape)}"
        )
    return tensor.expand(3, -1, -1) if tensor.shape[0] == 1 else tensor[:3]


def one_label_per_box(detections: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``detections`` (by descending score) without the repeats of a box under a lower-scoring
    label: multi-label decoding (``cnnkit.detection.postprocess``) proposes a box under every class
    that scores enough, which mAP wants and a picture does not."""
    seen: set[tuple[float, ...]] = set()
    keep = []
    for j, box in enumerate(detections["boxes"].tolist()):
        if tuple(box) not in seen:
            seen.add(tuple(box))
            keep.append(j)
    index = torch.tensor(keep, dtype=torch.long)
    return {k: v[index.to(v.device)] for k, v in detections.items()}


def draw_detections(
    image: torch.Tensor | np.ndarray,
    detections: Mapping[str, torch.Tensor],
    class_names: Sequence[str],
    score_threshold: float = 0.3,
    width: int = 1,
) -> torch.Tensor:
    """The image (see ``to_uint8_rgb``) as uint8 (3, H, W) with the detections scoring at least
    ``score_threshold`` drawn: boxes (xyxy pixels of this image) labelled "class score", each box
    once, with its best label (``one_label_per_box``)."""
    canvas = to_uint8_rgb(image)
    detections = one_label_per_box(detections)
    keep = detections["scores"] >= score_threshold
    boxes = detections["boxes"][keep].detach().float().cpu()
    if len(boxes) == 0:
        return canvas.clone()
    labels = detections["labels"][keep].tolist()
    scores = detections["scores"][keep].tolist()
    return draw_bounding_boxes(
        canvas,
        boxes,
        labels=[f"{class_names[c]} {s:.2f}" for c, s in zip(labels, scores, strict=True)],
        colors=[PALETTE[c % len(PALETTE)] for c in labels],
        width=width,
    )


def save_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """A uint8 (C, H, W) tensor as a PNG file (atomically)."""
    from PIL import Image

    array = image.permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buffer, "PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def draw_detection_grid(
    images: np.ndarray,
    detections: Sequence[Mapping[str, torch.Tensor]],
    class_names: Sequence[str],
    path: str | os.PathLike,
    score_threshold: float = 0.3,
    scale: int = 2,
    columns: int = 4,
) -> Path:
    """Images (N, H, W) or (N, H, W, C) in [0, 1] with their detections drawn, enlarged ``scale``
    times (nearest) so the labels are legible, in a grid of ``columns``, as a PNG."""
    drawn = []
    for image, found in zip(images, detections, strict=True):
        big = to_uint8_rgb(image).repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        scaled = {**found, "boxes": found["boxes"].float().cpu() * scale}
        drawn.append(draw_detections(big, scaled, class_names, score_threshold))
    return save_png(make_grid(drawn, nrow=columns, padding=4, pad_value=255), path)


def plot_precision_recall(
    curves: Mapping[int, tuple[np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    path: str | os.PathLike,
    columns: int = 5,
) -> Path:
    """One panel per class: precision against recall (``detection.metrics.precision_recall_curves``),
    titled with the class's AP (the mean precision over the 101 recall levels, COCO's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnkit.viz.training import save_figure

    labels = sorted(curves)
    rows = max(1, -(-len(labels) // columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.6 * columns, 2.5 * rows), squeeze=False, sharex=True, sharey=True
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, label in zip(axes.flat, labels, strict=False):
        recall, precision = curves[label]
        ax.axis("on")
        ax.plot(recall, precision, color=PALETTE[label % len(PALETTE)])
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        name = class_names[label] if label < len(class_names) else str(label)
        ax.set_title(f"{name}: AP50 {precision.mean():.3f}", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("recall")
    for ax in axes[:, 0]:
        ax.set_ylabel("precision")
    fig.suptitle("precision-recall at IoU 0.5 (pycocotools, 101 recall levels)")
    return save_figure(fig, path)


def plot_heatmaps(
    image: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    window: int,
    columns: int = 4,
) -> Path:
    """The image and one heat map per class of ``scores`` (K, S_h, S_w) over it: grid position
    (i, j) is the classifier's answer for the ``window``-sized window whose centres span the image
    evenly from window/2 to size - window/2 (as a 'valid' sliding window at a constant stride)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnkit.viz.training import save_figure

    height, width = image.shape[:2]
    _, grid_h, grid_w = scores.shape
    # cell centres at window/2 … size - window/2: each cell spans one step around its centre
    step_y = (height - window) / max(grid_h - 1, 1)
    step_x = (width - window) / max(grid_w - 1, 1)
    extent = (
        window / 2 - step_x / 2,
        width - window / 2 + step_x / 2,
        height - window / 2 + step_y / 2,
        window / 2 - step_y / 2,
    )
    panels = len(scores) + 1
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image, cmap="gray" if image.ndim == 2 else None)
    axes.flat[0].set_title("image", fontsize=8)
    for ax, name, heat in zip(axes.flat[1:], class_names, scores, strict=False):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.imshow(heat, cmap="inferno", alpha=0.6, vmin=0, vmax=1, extent=extent)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_title(f"{name} (max {heat.max():.2f})", fontsize=8)
    fig.suptitle(f"class probability of each {window}x{window} window")
    return save_figure(fig, path)
