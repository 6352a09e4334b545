"""Plots of a training run: learning curves, confusion matrix, a grid of predictions.

Pure matplotlib on tensors/arrays, written through ``cnnkit.io.atomic_write_bytes`` so a crash
never leaves a half-written PNG in a run directory.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cnnkit.io import atomic_write_bytes  # noqa: E402


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Render ``fig`` to PNG and move it into place atomically; closes the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _smooth(values: Sequence[float], weight: float = 0.6) -> list[float]:
    """Exponential moving average (TensorBoard's smoothing), started at the first value."""
    out: list[float] = []
    for v in values:
        out.append(v if not out else weight * out[-1] + (1 - weight) * v)
    return out


def history_figure(
    history: Sequence[dict[str, Any]],
    label_smoothing: float = 0.0,
    *,
    steps: Sequence[dict[str, float]] = (),
    metric: str = "accuracy",
    loss_label: str | None = None,
) -> Any:
    """Left: the training loss every logged step (``steps``: ``{"epoch": fraction, "loss"}``,
    smoothed) against epochs, with the validation loss at each epoch's end; right: the task's
    ``metric`` per epoch, training and validation. The x axis starts at 0, so a one-epoch run shows a
    curve, not two dots. With label smoothing the training loss is the smoothed one (higher than the
    plain validation loss), and its label says so (``loss_label`` overrides the label)."""
    epochs = [row["epoch"] for row in history]
    if loss_label is None:
        loss_label = "train_loss" + (
            f" (label smoothing {label_smoothing:g})" if label_smoothing else ""
        )
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    loss_ax, metric_ax = axes
    if steps:
        x = [row["epoch"] for row in steps]
        loss_ax.plot(x, _smooth([row["loss"] for row in steps]), "-", label=loss_label)
    elif all("loss" in row for row in history):
        loss_ax.plot(epochs, [row["loss"] for row in history], "o-", label=loss_label)
    # validation at the epochs that have it (``val_every`` leaves some out)
    validated = [row for row in history if "val_loss" in row]
    if validated:
        x = [row["epoch"] for row in validated]
        loss_ax.plot(x, [row["val_loss"] for row in validated], "s--", label="val_loss")
    for prefix, style in (("", "o-"), ("val_", "s--")):
        rows = [row for row in history if row.get(prefix + metric) is not None]
        # training metrics on every epoch or not at all; validation where it ran
        if rows and (prefix == "val_" or len(rows) == len(history)):
            x = [row["epoch"] for row in rows]
            values = [row[prefix + metric] for row in rows]
            metric_ax.plot(x, values, style, label=(prefix or "train_") + metric)
    for ax, title in ((loss_ax, "loss"), (metric_ax, metric)):
        ax.set_xlabel("epoch")
        ax.set_xlim(0, max(epochs, default=1) * 1.02)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend()
    return fig


def plot_history(
    history: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    label_smoothing: float = 0.0,
    **options: Any,
) -> Path:
    """:func:`history_figure` written to ``path`` as a PNG."""
    return save_figure(history_figure(history, label_smoothing, **options), path)


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike
) -> Path:
    """Counts with rows = true class, columns = predicted class, each cell annotated."""
    matrix = np.asarray(matrix)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.65 * n, 0.8 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2
    for i in range(n):
        for j in range(n):
            color = "white" if matrix[i, j] > threshold else "black"
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7, color=color)
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"confusion matrix (accuracy {accuracy:.2%})")
    return save_figure(fig, path)


def plot_predictions(
    images: np.ndarray,
    predicted: Sequence[int],
    true: Sequence[int],
    class_names: Sequence[str],
    path: str | os.PathLike,
    columns: int = 8,
) -> Path:
    """A grid of images (N, H, W) or (N, H, W, C) titled 'predicted / true'; mistakes in red."""
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, p, t in zip(axes.flat, images, predicted, true, strict=False):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_title(
            f"{class_names[p]}\n({class_names[t]})", fontsize=7, color="black" if p == t else "red"
        )
    return save_figure(fig, path)
