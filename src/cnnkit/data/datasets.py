"""Datasets by name, for the trainer and the command line.

An in-memory classification dataset carries its splits, its class names and the per-channel
mean/std (computed on its training split) that its batches are normalized with.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnnkit.data.fashion_mnist import FASHION_MNIST_CLASSES, Split, load_fashion_mnist


@dataclass(frozen=True)
class ImageClassificationData:
    """Splits of uint8 images (N, C, H, W) with int64 labels, and how to normalize them."""

    name: str
    train: Split
    valid: Split
    test: Split
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.train[0].shape[1:])  # type: ignore[return-value]


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), on the [0, 1] scale."""
    x = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


def _fashion_mnist(root: str | os.PathLike | None) -> ImageClassificationData:
    (xt, yt), (xv, yv), (xs, ys) = load_fashion_mnist(root)
    xt, xv, xs = xt.unsqueeze(1), xv.unsqueeze(1), xs.unsqueeze(1)
    mean, std = channel_stats(xt)
    return ImageClassificationData(
        "fashion-mnist", (xt, yt), (xv, yv), (xs, ys), FASHION_MNIST_CLASSES, mean, std
    )


DATASETS: dict[str, Callable[[str | os.PathLike | None], ImageClassificationData]] = {
    "fashion-mnist": _fashion_mnist,
}


def load_dataset(name: str, root: str | os.PathLike | None = None) -> ImageClassificationData:
    """A dataset by name; an unknown name lists the valid ones."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}"
        ) from None
    return loader(root)
