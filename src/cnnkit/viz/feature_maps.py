"""The notes' first convolution example as a picture: two images, their feature maps, pooled maps.

Géron, *Hands-On Machine Learning* (2019), ch. 14, "TensorFlow Implementation": two 7×7 filters, a
vertical and a horizontal white line, applied with ``tf.nn.conv2d(images, filters, strides=1,
padding="same")`` to ``china.jpg`` and ``flower.jpg``. The vertical-line filter adds up a 7-pixel
column, so vertical white lines stay sharp and everything else is blurred; the horizontal one does
the same for horizontal lines.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cnnkit import ops  # noqa: E402

LINE_FILTER_CAPTIONS = (
    "vertical line filter: vertical white lines stay sharp, the rest blurs",
    "horizontal line filter: horizontal white lines stay sharp, the rest blurs",
)
POOL_CAPTIONS = {
    "max": "max pool 2×2/2: strongest response per window, ¼ of the cells",
    "avg": "average pool 2×2/2: mean response per window, ¼ of the cells",
    "depth": "depth max pool over all {n} maps: the strongest filter at each pixel",
}


def line_filters(size: int = 7, channels: int = 3) -> np.ndarray:
    """The notes' two filters ``[size, size, channels, 2]``: a vertical and a horizontal line of ones."""
    filters = np.zeros((size, size, channels, 2), np.float32)
    filters[:, size // 2, :, 0] = 1  # vertical line
    filters[size // 2, :, :, 1] = 1  # horizontal line
    return filters


def random_filters(count: int, size: int = 7, channels: int = 3, seed: int = 0) -> np.ndarray:
    """``count`` random filters ``[size, size, channels, count]`` (zero-mean, unit norm each)."""
    if count < 1:
        raise ValueError(f"random_filters: count={count}; expected at least 1 filter")
    rng = np.random.default_rng(seed)
    filters = rng.standard_normal((size, size, channels, count)).astype(np.float32)
    filters -= filters.mean(axis=(0, 1, 2), keepdims=True)
    return filters / np.linalg.norm(filters.reshape(-1, count), axis=0)


def feature_maps(
    images: np.ndarray,
    filters: np.ndarray,
    stride: int = 1,
    padding: str = "SAME",
    pool: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(maps, pooled)``: ``conv2d`` of NHWC images, and the maps pooled as ``pool`` says.

    ``pool``: None, "max" or "avg" (2×2 windows, stride 2, 'VALID' as Keras' ``MaxPool2D(2)``), or
    "depth" (``max_pool`` with ``ksize=(1, 1, 1, n)`` over all n maps, as the notes' depth pooling).
    """
    maps = ops.conv2d(images, filters, strides=stride, padding=padding)
    if pool is None:
        return maps.numpy(), None
    if pool == "max":
        pooled = ops.max_pool(maps, 2, 2, "VALID")
    elif pool == "avg":
        pooled = ops.avg_pool(maps, 2, 2, "VALID")
    elif pool == "depth":
        depth = maps.shape[3]
        pooled = ops.max_pool(maps, (1, 1, 1, depth), (1, 1, 1, depth), "VALID")
    else:
        raise ValueError(f"pool={pool!r}; expected None, 'max', 'avg' or 'depth'")
    return maps.numpy(), pooled.numpy()


def plot_feature_maps(
    images: np.ndarray | None = None,
    filters: np.ndarray | None = None,
    *,
    stride: int = 1,
    padding: str = "SAME",
    pool: str | None = None,
    captions: tuple[str, ...] | None = None,
    out: str | os.PathLike | None = None,
) -> Figure:
    """One row per image: the image, then each filter's feature map (grey), then pooled maps.

    Defaults reproduce the notes: ``cnnkit.data.load_sample_images()`` and ``line_filters()`` with
    ``strides=1, padding="SAME"``. ``captions`` name the filters (default: the notes' description for
    the line filters, "filter i" otherwise). Saves a PNG to ``out`` when given.
    """
    if images is None:
        from cnnkit.data.samples import load_sample_images

        images = load_sample_images()
    if filters is None:
        filters = line_filters(channels=images.shape[3])
    count = filters.shape[3]
    if captions is None:
        notes_filters = line_filters(filters.shape[0], filters.shape[2])
        is_notes = filters.shape == notes_filters.shape and np.array_equal(filters, notes_filters)
        captions = (
            LINE_FILTER_CAPTIONS if is_notes else tuple(f"filter {i + 1}" for i in range(count))
        )
    maps, pooled = feature_maps(images, filters, stride, padding, pool)

    columns = 1 + count + (0 if pooled is None else pooled.shape[3])
    fig, axes = plt.subplots(
        len(images), columns, figsize=(3.2 * columns, 2.4 * len(images) + 0.6), squeeze=False
    )
    for row, image in enumerate(images):
        panels: list[tuple[np.ndarray, str | None, str]] = [
            (np.clip(image, 0, 1), None, "input image")
        ]
        panels += [(maps[row, :, :, i], "gray", captions[i]) for i in range(count)]
        if pooled is not None:
            for i in range(pooled.shape[3]):
                caption = POOL_CAPTIONS[str(pool)].format(n=count)
                if pool != "depth":
                    caption = f"{captions[i].split(':')[0]}, {caption}"
                panels.append((pooled[row, :, :, i], "gray", caption))
        for ax, (panel, cmap, caption) in zip(axes[row], panels, strict=True):
            ax.imshow(panel, cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(_wrap(caption), fontsize=8)
            ax.set_xlabel(f"{panel.shape[0]}×{panel.shape[1]}", fontsize=7)
    fig.suptitle(
        f"conv2d(images, filters, strides={stride}, padding={padding!r})  "
        f"— filters {filters.shape[0]}×{filters.shape[1]}×{filters.shape[2]}×{count}",
        fontsize=10,
    )
    fig.tight_layout()
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=72)
    return fig


def _wrap(text: str, width: int = 38) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
