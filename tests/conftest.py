"""Shared fixtures. Tests run on the CPU with a fixed seed; real data comes from Debian's
dataset-fashion-mnist (installed by ./run) or $CNNKIT_DATA."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fashion_mnist():
    """The real Fashion-MNIST splits, loaded once per test session."""
    from cnnkit.data import load_fashion_mnist

    return load_fashion_mnist()
