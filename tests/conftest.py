"""Shared fixtures. Tests run on the CPU with a fixed seed; real data comes from Debian's
dataset-fashion-mnist (installed by ./run) or $CNNKIT_DATA."""

from __future__ import annotations

import pytest
import torch
from quick_data import fashion_mnist_cut


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fashion_mnist():
    """The real Fashion-MNIST splits, loaded once per test session."""
    from cnnkit.data import load_fashion_mnist

    return load_fashion_mnist()


@pytest.fixture
def quick_fashion_mnist(fashion_mnist):
    """``--data fashion-mnist`` in this test validates on 1,000 images and tests on 2,000 (of 5,000
    and 10,000): scoring the notes' CNN on 15,000 images a run costs most of a small run's time."""
    with fashion_mnist_cut(fashion_mnist) as small:
        yield small
