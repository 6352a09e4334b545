"""Segmentation figures: label maps drawn over their images as colour overlays, with a legend.

Colours: matplotlib's qualitative ``tab20`` for up to 20 classes, its strong hues first (the
VOC colour map of palette masks has greys and near-blacks that vanish on grey images); more classes
take the PASCAL VOC colour map (``cnnkit.data.segmentation.voc_colormap``). The
overlays are ``torchvision.utils.draw_segmentation_masks``; matplotlib (imported inside the
functions that plot) only lays out the panels and the legend. Files are written through
``cnnkit.io.atomic_write_bytes``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.utils import draw_segmentation_masks

from cnnkit.data.segmentation import IGNORE_INDEX, rgb, voc_colormap
from cnnkit.io import atomic_write_bytes

#: class names drawn without a colour (the image shows through)
BACKGROUND_NAMES = ("background", "_background_", "bg")


def class_colors(count: int) -> list[tuple[int, int, int]]:
    """The colour of each of ``count`` classes, RGB 0-255 (see the module docstring)."""
    if count > 20:
        return [rgb(color) for color in voc_colormap(count)]
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"]  # pairs (strong, light) of ten hues
    # strong hues first, light ones next, the greys (14, 15) last: grey vanishes on grey images
    order = [*range(0, 14, 2), 16, 18, *range(1, 14, 2), 17, 19, 14, 15]
    return [rgb([round(255 * c) for c in tab20(i)[:3]]) for i in order[:count]]


def drawn_classes(class_names: Sequence[str]) -> list[int]:
    """The classes an overlay colours: all but one named background."""
    return [k for k, name in enumerate(class_names) if name.lower() not in BACKGROUND_NAMES]


def overlay(
    image: torch.Tensor | np.ndarray,
    labels: torch.Tensor,
    class_names: Sequence[str],
    alpha: float = 0.5,
) -> torch.Tensor:
    """A label map (H, W) over its image, uint8 (3, H, W). ``image``: uint8 (C, H, W), or floats
    in [0, 1] as (H, W) or (H, W, C) (``DataMeta.to_display``). Background and ignored pixels are
    left as they are."""
    if isinstance(image, np.ndarray):
        pixels = torch.from_numpy(np.ascontiguousarray(image))
        pixels = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)
        pixels = pixels.unsqueeze(0) if pixels.dim() == 2 else pixels.permute(2, 0, 1)
    else:
        pixels = image
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1)
    pixels = pixels[:3].contiguous()
    if tuple(pixels.shape[1:]) != tuple(labels.shape):
        raise ValueError(
            f"overlay: image {tuple(pixels.shape[1:])} and label map {tuple(labels.shape)} differ "
            "in size; expected the same H and W"
        )
    labels = labels.cpu()
    classes = drawn_classes(class_names)
    if not classes:
        return pixels
    masks = labels.unsqueeze(0) == torch.tensor(classes).view(-1, 1, 1)
    colors = class_colors(len(class_names))
    return draw_segmentation_masks(pixels, masks, alpha=alpha, colors=[colors[k] for k in classes])


def _legend(fig: Any, class_names: Sequence[str], classes: Sequence[int]) -> None:
    from matplotlib.patches import Patch

    colors = class_colors(len(class_names))
    handles = [
        Patch(facecolor=f"#{r:02x}{g:02x}{b:02x}", edgecolor="black", label=class_names[k])
        for k in classes
        for r, g, b in [colors[k]]
    ]
    if handles:
        fig.legend(
            handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8,
            frameon=False, bbox_to_anchor=(0.5, 0.0),
        )  # fmt: skip


def _save(fig: Any, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _figure(rows: int, columns: int, panel: float = 2.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    height = panel * rows + 0.8  # 0.8 inch below the panels for the legend
    fig, axes = plt.subplots(rows, columns, figsize=(panel * columns, height), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.3 / height, bottom=0.8 / height)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def plot_segmentations(
    images: np.ndarray,
    predicted: torch.Tensor,
    true: torch.Tensor,
    class_names: Sequence[str],
    path: str | os.PathLike,
    ignore_index: int = IGNORE_INDEX,
) -> Path:
    """One row per image: the image, its predicted mask and its true mask as overlays (titled with
    the image's pixel accuracy), and one legend of every class drawn."""
    fig, axes = _figure(len(images), 3)
    for row, (image, pred, target) in enumerate(zip(images, predicted, true, strict=True)):
        counted = target != ignore_index
        accuracy = (pred[counted] == target[counted]).double().mean().item()
        panels = (
            (image, "image"),
            (overlay(image, pred, class_names), f"predicted ({accuracy:.0%} of pixels right)"),
            (overlay(image, target, class_names), "true"),
        )
        for ax, (shown, title) in zip(axes[row], panels, strict=True):
            if isinstance(shown, torch.Tensor):
                shown = shown.permute(1, 2, 0).numpy()
            ax.imshow(
                shown,
                cmap="gray" if shown.ndim == 2 else None,
                vmin=0,
                vmax=1 if shown.dtype != np.uint8 else 255,
            )
            ax.set_title(title, fontsize=8)
    _legend(fig, class_names, drawn_classes(class_names))
    return _save(fig, path)


def plot_overlay(
    image: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    path: str | os.PathLike,
    alpha: float = 0.5,
) -> Path:
    """An image (uint8 (C, H, W)) beside its label map drawn over it, with a legend of the classes
    that occur."""
    fig, axes = _figure(1, 2, panel=4.0)
    shown = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    axes[0, 0].imshow(shown.permute(1, 2, 0).numpy())
    axes[0, 0].set_title("image", fontsize=9)
    axes[0, 1].imshow(overlay(image, labels, class_names, alpha).permute(1, 2, 0).numpy())
    axes[0, 1].set_title("segmentation", fontsize=9)
    present = set(torch.unique(labels).tolist())
    _legend(fig, class_names, [k for k in drawn_classes(class_names) if k in present])
    return _save(fig, path)
