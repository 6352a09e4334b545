"""A small real run for the deployment tests (test_deploy, test_serve): a folder of 160 real
Fashion-MNIST items (4 classes, split 75/15/10 by `cnnkit train`), fashion_cnn for 2 epochs. The
whole Fashion-MNIST test split alone takes ~25 s to evaluate on 2 busy cores; this run takes ~6 s."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from cnnkit.cli import main

EPOCHS = 2
CLASSES = {1: "Trouser", 7: "Sneaker", 8: "Bag", 9: "Ankle boot"}  # Fashion-MNIST's labels
PER_CLASS = 40


def make_fashion_folder(root: Path, fashion_mnist) -> Path:
    """Class sub-folders of the first PER_CLASS test items of each class in CLASSES (28 × 28 PNG)."""
    images, labels = fashion_mnist[2]
    for label, name in CLASSES.items():
        (root / name).mkdir()
        for i, index in enumerate((labels == label).nonzero().flatten()[:PER_CLASS].tolist()):
            Image.fromarray(images[index].numpy()).save(root / name / f"{i:03d}.png")
    return root


def train_small_run(folder: Path, out: Path, *extra: str) -> Path:
    code = main(
        ["train", "--model", "fashion_cnn", "--data", str(folder), "--image-size", "28",
         "--epochs", str(EPOCHS), "--batch-size", "32", "--lr", "3e-3", "--workers", "0",
         "--out", str(out), "--no-progress", *extra]
    )  # fmt: skip
    assert code == 0
    return out


def app_client(runs: list[Path]):
    """A Starlette ``TestClient`` of ``cnnkit serve``'s app over ``runs``; the calling test is
    skipped, with the reason, where the ``serve`` extra or Starlette's HTTP client is absent."""
    import importlib.util

    import pytest

    pytest.importorskip("starlette", reason="the optional extra 'serve' is not installed")
    if not any(importlib.util.find_spec(name) for name in ("httpx2", "httpx")):
        pytest.skip("Starlette's TestClient needs httpx2 (Starlette >= 1.0) or httpx")
    from starlette.testclient import TestClient

    from cnnkit.deploy.serve import create_app, load_runs

    return TestClient(create_app(load_runs(runs)))
