"""Transfer vs from scratch with scarce data: 100 labelled Fashion-MNIST images per class.

    python benchmarks/make_fashion_folder.py /tmp/fashion100       # 1,000 PNGs, 100 per class
    python benchmarks/transfer_fashion_mnist.py /tmp/fashion100 --out docs/notes/transfer.json

Both models see the same 1,000 images with the same seeded stratified split (85 % train, 15 % valid
for early stopping; no test split: both are tested on the full 10,000-image Fashion-MNIST test set):

- ``efficientnet_lite0`` with its ImageNet weights, fine-tuned in the notes' two phases
  (``cnnkit.train.freeze.fine_tune``: head on the frozen base at 3e-3, then everything at 1e-4 with
  the BatchNorm statistics kept, early stopping, the best epoch of either phase), on the greyscale
  images repeated to RGB and upscaled to ``--image-size`` (default 112: a quarter of the 224×224
  compute, which keeps this CPU benchmark to minutes), with flips and mild crops (scale 0.8-1);
- ``fashion_cnn`` (the notes' CNN) trained from scratch on the 28×28 images with random flips, for
  up to ``--scratch-epochs`` with early stopping on validation accuracy.

Prints one JSON line per model (test accuracy, train and test seconds) and writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF

from cnnkit.data import TensorBatches, load_fashion_mnist
from cnnkit.data.folder import find_images, load_image_folder, stratified_split
from cnnkit.models import create_model
from cnnkit.pretrained import load
from cnnkit.train import EarlyStopping, Trainer
from cnnkit.train.freeze import fine_tune

FRACTIONS = (0.85, 0.15, 0.0)


def fashion_test_set() -> tuple[torch.Tensor, torch.Tensor]:
    _, _, (x_test, y_test) = load_fashion_mnist()
    return x_test.unsqueeze(1), y_test  # N x 1 x 28 x 28 uint8


def run_transfer(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    pretrained = load("efficientnet_lite0")
    pre = pretrained.preprocess
    model = pretrained.model
    model.fc = nn.Linear(model.fc.in_features, 10)
    # Fashion-MNIST items are already centred and tight: no evaluation crop (crop_pct 1).
    data = load_image_folder(
        args.folder,
        image_size=args.image_size,
        crop_pct=1.0,
        mean=pre.mean_01,
        std=pre.std_01,
        fractions=FRACTIONS,
        seed=args.seed,
        batch_size=32,
        workers=args.workers,
        crop_scale=(0.8, 1.0),  # the items fill the frame: crop little; greyscale: no colour jitter
        jitter=0.0,
    )
    start = time.perf_counter()
    history = fine_tune(
        model,
        data.train,
        data.valid,
        frozen_epochs=args.frozen_epochs,
        epochs=args.epochs,
        lr=args.lr,
        lr_factor=args.lr_factor,
        patience=4,
        bn_stats=args.bn_stats,
        device="cpu",
        progress=False,
        seed=args.seed,
    )
    train_seconds = time.perf_counter() - start

    # The test images go through the folder pipeline's steps: grey -> RGB, the same resize.
    x_test, y_test = fashion_test_set()
    start = time.perf_counter()
    x_test = TF.resize(x_test.expand(-1, 3, -1, -1), args.image_size, antialias=True)
    test = TensorBatches(x_test, y_test, batch_size=100, mean=pre.mean_01, std=pre.std_01)
    metrics = Trainer(model, device="cpu", progress=False).evaluate(test)
    test_seconds = time.perf_counter() - start
    return {
        "model": "efficientnet_lite0 (ImageNet weights, fine-tuned)",
        "image_size": args.image_size,
        "train_images": len(data.splits["train"]),
        "epochs": f"{args.frozen_epochs} frozen + {sum(r['phase'] == 2 for r in history)}",
        "best_phase_epoch": max(history, key=lambda r: r["val_accuracy"])["epoch"],
        "val_accuracy": [round(r["val_accuracy"], 4) for r in history],
        "test_accuracy": metrics["accuracy"],
        "train_seconds": round(train_seconds, 1),
        "test_seconds": round(test_seconds, 1),
    }


def run_scratch(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    images = find_images(args.folder)
    train_idx, valid_idx, _ = stratified_split(images.labels, FRACTIONS, args.seed)

    def tensors(indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = [np.asarray(Image.open(images.paths[i]).convert("L")) for i in indices]
        x = torch.from_numpy(np.stack(pixels)).unsqueeze(1)
        return x, torch.tensor([images.labels[i] for i in indices])

    (x_train, y_train), (x_valid, y_valid) = tensors(train_idx), tensors(valid_idx)
    x = x_train.float() / 255
    mean, std = (x.mean().item(),), (x.std().item(),)
    train = TensorBatches(
        x_train, y_train, 32, shuffle=True, seed=args.seed, mean=mean, std=std, flip=True
    )
    valid = TensorBatches(x_valid, y_valid, 256, mean=mean, std=std)
    model = create_model("fashion_cnn", num_classes=10, in_channels=1)
    trainer = Trainer(
        model,
        device="cpu",
        progress=False,
        seed=args.seed,
        callbacks=[EarlyStopping("val_accuracy", patience=10)],
    )
    start = time.perf_counter()
    history = trainer.fit(train, valid, epochs=args.scratch_epochs)
    train_seconds = time.perf_counter() - start
    x_test, y_test = fashion_test_set()
    start = time.perf_counter()
    metrics = trainer.evaluate(TensorBatches(x_test, y_test, 500, mean=mean, std=std))
    test_seconds = time.perf_counter() - start
    return {
        "model": "fashion_cnn (from scratch)",
        "image_size": 28,
        "train_images": len(train_idx),
        "epochs": len(history),
        "best_val_accuracy": round(max(r["val_accuracy"] for r in history), 4),
        "test_accuracy": metrics["accuracy"],
        "train_seconds": round(train_seconds, 1),
        "test_seconds": round(test_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="made by benchmarks/make_fashion_folder.py")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--frozen-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3, help="phase 1 peak learning rate")
    parser.add_argument("--lr-factor", type=float, default=1 / 30, help="phase 2 lr = lr * this")
    parser.add_argument(
        "--bn-stats", action="store_true", help="phase 2 re-estimates BatchNorm statistics"
    )
    parser.add_argument("--scratch-epochs", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for run in (run_scratch, run_transfer):
        results.append(run(args))
        print(json.dumps(results[-1]), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
