"""Train the super-resolution weights cnnkit ships (``src/cnnkit/pretrained/superres_x{2,4}.safetensors``).

Measured (AMD EPYC, 2 cores, AVX2, fp32, alone on the machine): 20 minutes per scale on its time
budget; see the README's "Super-resolution" section for the held-out table.

What it does, per scale:

1. writes the training photos (``cnnkit.data.photos.training_photos()``: every photo, colour and
   grey, that scikit-learn and scikit-image install except the held-out ``astronaut`` and
   ``china``) as PNGs;
2. trains through the ordinary command line, ``cnnkit train --task superres --model edsr
   --model-option scale=S --model-option residual=true --data photos:DIR --time-budget 20m ...``
   (a tenth of the photos is the validation split that picks the best epoch; the held-out photos
   are never seen);
3. copies the best epoch's model weights (``model/`` of the run's ``best.safetensors``) into a
   plain safetensors file of the package, written atomically, and prints its size and sha256 for
   the registry (``cnnkit.pretrained.weights.SUPERRES_WEIGHTS``, whose ``SUPERRES_MODEL`` and
   ``SUPERRES_OPTIONS`` must match ``RECIPE``: a test reads them back from the file).

Usage, on an otherwise idle machine (the time budget makes a busy one train less)::

    python benchmarks/train_superres.py --scale 2
    python benchmarks/train_superres.py --scale 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# ---- the recipe: one dict, a comment per knob --------------------------------------------------
RECIPE = {
    "model": "edsr",  # Lim et al. 2017's baseline design, narrowed: residual blocks, no BN
    "options": {"features": 32, "blocks": 8},  # ~160k parameters: 0.64 MB in fp32
    "residual": True,  # predict the detail over PIL bicubic: starts at bicubic, learns faster
    "loss": "l1",  # mean absolute error on Y
    "patch_size": {2: 96, 4: 192},  # HR patch side: 48 low-resolution pixels, as EDSR
    "patches": 2000,  # random patches per epoch (each photo equally often)
    "batch_size": 16,
    "epochs": {2: 1000, 4: 1000},  # an upper bound: the time budget ends the run
    "time_budget": {2: "20m", 4: "20m"},  # the schedule stretches over it (2 cores: ~32k patches)
    "optimizer": "adam",
    "lr": 6e-4,  # the one-cycle peak (ESPCN took 1e-3; 4e-3 diverged at epoch 13 of 60)
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
    run = work / f"{RECIPE['model']}_x{scale}"
    command = [
        "train", "--task", "superres", "--model", RECIPE["model"],
        "--model-option", f"scale={scale}",
        "--model-option", f"residual={json.dumps(RECIPE['residual'])}",
        *[f"--model-option={k}={json.dumps(v)}" for k, v in RECIPE["options"].items()],
        "--task-option", f"loss={RECIPE['loss']}",
        "--data", f"photos:{photos}",
        "--data-option", f"patch_size={RECIPE['patch_size'][scale]}",
        "--data-option", f"patches={RECIPE['patches']}",
        "--data-option", f"fractions={json.dumps(RECIPE['fractions'])}",
        "--epochs", str(RECIPE["epochs"][scale]), "--batch-size", str(RECIPE["batch_size"]),
        "--time-budget", RECIPE["time_budget"][scale],
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
        "options": json.dumps({"residual": RECIPE["residual"], **RECIPE["options"]}),
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
