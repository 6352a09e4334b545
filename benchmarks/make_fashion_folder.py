"""Make an ImageFolder of N labelled Fashion-MNIST training images per class (the scarce-data set).

    python benchmarks/make_fashion_folder.py /tmp/fashion100 --per-class 100 --seed 0

Images are drawn without replacement from the book's 55,000 training images (never from the
validation or test images), seeded, and written as 28×28 greyscale PNGs
``DIR/<class>/<training index>.png``; class folder names are the Fashion-MNIST class names made
file-system safe ("T-shirt/top" → "T-shirt_top"), sorted as the labels 0-9 are.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.data import FASHION_MNIST_CLASSES, load_fashion_mnist


def folder_name(index: int) -> str:
    # A numeric prefix keeps ImageFolder's sorted class order equal to Fashion-MNIST's label order.
    return f"{index}_{FASHION_MNIST_CLASSES[index].replace('/', '_').replace(' ', '_')}"


def make_folder(out: Path, per_class: int = 100, seed: int = 0) -> list[int]:
    """Write the folder; returns the chosen training indices."""
    (x_train, y_train), _, _ = load_fashion_mnist()
    rng = np.random.default_rng(seed)
    labels = y_train.numpy()
    chosen: list[int] = []
    for label in range(len(FASHION_MNIST_CLASSES)):
        candidates = np.flatnonzero(labels == label)
        picked = np.sort(rng.choice(candidates, size=per_class, replace=False))
        folder = out / folder_name(label)
        folder.mkdir(parents=True, exist_ok=True)
        for index in picked:
            Image.fromarray(x_train[index].numpy()).save(folder / f"{index:05d}.png")
        chosen += picked.tolist()
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    chosen = make_folder(args.out, args.per_class, args.seed)
    print(f"wrote {len(chosen)} images to {args.out}")


if __name__ == "__main__":
    main()
