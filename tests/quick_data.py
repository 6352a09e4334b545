"""Real data cut small for tests that run the command line end to end."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def cut_fashion_mnist(splits, train: int | None = None, valid: int = 1000, test: int = 2000):
    """``load_fashion_mnist``'s output with each split cut to its first images (the real images,
    sliced; ``train=None`` keeps the whole training split)."""
    (xt, yt), (xv, yv), (xs, ys) = splits
    return (xt[:train], yt[:train]), (xv[:valid], yv[:valid]), (xs[:test], ys[:test])


@contextmanager
def fashion_mnist_cut(splits, **cuts: int | None) -> Iterator[tuple]:
    """Within the block, ``--data fashion-mnist`` loads ``cut_fashion_mnist(splits, **cuts)``."""
    small = cut_fashion_mnist(splits, **cuts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cnnkit.data.datasets.load_fashion_mnist", lambda root=None: small)
        yield small
