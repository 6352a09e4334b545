"""Train the super-resolution weights cnnkit ships (``src/cnnkit/pretrained/superres_x{2,4}.safetensors``).

Measured (AMD EPYC, pinned to one core of two shared, ``OMP_NUM_THREADS=1``, fp32): see the
README's "Super-resolution" section for the times and the held-out table.

What it does, per scale:

1. writes the training photos (``cnnkit.data.photos.training_photos()``: every colour photo
   scikit-learn and scikit-image install except the held-out ``astronaut`` and ``china``) as PNGs;
2. trains through the ordinary command line, ``cnnkit train --task superres --model espcn
   --model-option scale=S --model-option residual=true --data photos:DIR ...`` (one photo of the
   folder is the validation split that picks the best epoch; the held-out photos are never seen);
3. copies the best epoch's model weights (``model/`` of the run's ``best.safetensors``) into a
   plain safetensors file of the package, written atomically, and prints its size and sha256 for
   the registry (``cnnkit.pretrained.weights.SUPERRES_WEIGHTS``).

Usage (wait while ``/tmp/cnnkit-quiet`` exists)::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/train_superres.py --scale 2
    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/train_superres.py --scale 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# ---- the recipe: one dict, a comment per knob --------------------------------------------------
RECIPE = {
    "model": "espcn",  # Shi et al. 2016, 5x5/64 - 3x3/32 - 3x3/s^2 - PixelShuffle, tanh
    "residual": True,  # predict the detail over PIL bicubic: starts at bicubic, learns faster
    "loss": "l1",  # mean absolute error on Y
    "patch_size": {2: 96, 4: 128},  # HR patch side: 48 and 32 low-resolution pixels
    "patches": 2000,  # random patches per epoch (each photo equally often)
    "batch_size": 16,
    "epochs": {2: 40, 4: 40},  # 80,000 patches each
    "optimizer": "adam",
    "lr": 1e-3,  # the one-cycle peak (4e-3 diverged at epoch 13 of 60)
    "schedule": "onecycle",
    "fractions": [0.9, 0.1, 0.0],  # of the 9 training photos: 8 train, 1 validates, none tests
    "seed": 0,
}
ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cnnkit" / "pretrained"


def train(scale: int, work: Path) -> Path:
    """Train the ``scale`` model through ``cnnkit train``; the run directory."""
    from cnnkit.cli import main
    from cnnkit.data.photos import write_sample_photos

    photos = work / "photos"
    if not photos.is_dir():
        write_sample_photos(photos)
    run = work / f"espcn_x{scale}"
    command = [
        "train", "--task", "superres", "--model", RECIPE["model"],
        "--model-option", f"scale={scale}",
        "--model-option", f"residual={json.dumps(RECIPE['residual'])}",
        "--task-option", f"loss={RECIPE['loss']}",
        "--data", f"photos:{photos}",
        "--data-option", f"patch_size={RECIPE['patch_size'][scale]}",
        "--data-option", f"patches={RECIPE['patches']}",
        "--data-option", f"fractions={json.dumps(RECIPE['fractions'])}",
        "--epochs", str(RECIPE["epochs"][scale]), "--batch-size", str(RECIPE["batch_size"]),
        "--optimizer", RECIPE["optimizer"], "--lr", str(RECIPE["lr"]),
        "--schedule", RECIPE["schedule"], "--seed", str(RECIPE["seed"]),
        "--device", "cpu", "--precision", "fp32", "--workers", "0", "--no-progress",
        "--out", str(run), "--overwrite",
    ]  # fmt: skip
    print("cnnkit " + " ".join(command))
    if main(command) != 0:
        raise SystemExit(f"training x{scale} failed")
    return run


def export(run: Path, scale: int) -> Path:
    """The run's best model weights as ``superres_x{scale}.safetensors`` of the package."""
    from safetensors.torch import save_file

    from cnnkit.io import atomic_write, sha256_file
    from cnnkit.train.checkpoint import read_checkpoint

    tensors, metadata = read_checkpoint(run / "best.safetensors")
    weights = {
        k.removeprefix("model/"): v.contiguous()
        for k, v in tensors.items()
        if k.startswith("model/")
    }
    info = {
        "model": RECIPE["model"],
        "scale": str(scale),
        "options": json.dumps({"residual": RECIPE["residual"]}),
        "epoch": metadata.get("epoch", ""),
        "recipe": json.dumps(RECIPE),
    }
    target = PACKAGE / f"superres_x{scale}.safetensors"
    atomic_write(target, lambda tmp: save_file(weights, str(tmp), metadata=info))
    size = target.stat().st_size
    print(f"wrote {target} ({size:,} bytes), sha256 {sha256_file(target)}")
    if size >= 1_000_000:
        raise SystemExit(f"{target}: {size:,} bytes; the shipped weights must stay under 1 MB")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, choices=(2, 4), required=True)
    parser.add_argument("--work", default="/tmp/cnnkit-superres", help="photos and runs go here")
    args = parser.parse_args()
    start = time.perf_counter()
    run = train(args.scale, Path(args.work))
    export(run, args.scale)
    print(f"x{args.scale}: {(time.perf_counter() - start) / 60:.1f} min in all")


if __name__ == "__main__":
    main()
