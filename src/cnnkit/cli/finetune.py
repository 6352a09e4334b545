"""``cnnkit finetune``: transfer a pretrained model to a folder of your images, in the notes' two phases.

    cnnkit finetune --model efficientnet_lite0 --data DIR --frozen-epochs 5 --epochs 5 --out runs/NAME

``DIR`` holds one sub-folder per class (or is a .csv/.json list of path,label). The images are split
75/15/10 (stratified, seeded), decoded once, and served with augmentation. Phase 1 trains a new dense
head on the frozen base (its BatchNorm layers kept in inference mode); phase 2 unfreezes and continues
at a tenth of the learning rate with early stopping, the BatchNorm statistics still the pretrained
ones unless ``--bn-stats``; the model keeps the best validation epoch of either phase. The run directory is that of ``cnnkit train``
(config with the class names, metrics, best/last checkpoints, history plot, test metrics), so
``cnnkit predict runs/NAME IMAGE`` works on it.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from cnnkit.cli import CLIError
from cnnkit.data.folder import load_image_folder
from cnnkit.models import model_info
from cnnkit.pretrained import list_weights, load
from cnnkit.train import RunDir, Trainer, rundir
from cnnkit.train.checkpoint import load_checkpoint
from cnnkit.train.distributed import is_main_process
from cnnkit.train.freeze import fine_tune

TEST_METRICS = "test_metrics.json"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a pretrained model on a folder of images")
    p.add_argument("--model", required=True, choices=list_weights(), help="pretrained model")
    p.add_argument("--weights", default=None, help="checkpoint file (default: the registered one)")
    p.add_argument(
        "--data", required=True, help="folder of class sub-folders, or a .csv/.json list"
    )
    p.add_argument("--out", required=True, help="run directory to write, e.g. runs/flowers")
    p.add_argument("--frozen-epochs", type=int, default=5, help="phase 1: head only")
    p.add_argument("--epochs", type=int, default=5, help="phase 2: the whole network")
    p.add_argument("--lr", type=float, default=1e-3, help="phase 1 peak learning rate")
    p.add_argument(
        "--lr-factor", type=float, default=0.1, help="phase 2 learning rate = lr * lr-factor"
    )
    p.add_argument("--patience", type=int, default=3, help="phase 2 early stopping (epochs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--image-size", type=int, default=None, help="input side (default: the weights')"
    )
    p.add_argument(
        "--split", default="0.75,0.15,0.10", help="train,valid,test fractions (the notes')"
    )
    p.add_argument("--no-augment", action="store_true", help="no crop/flip/colour augmentation")
    p.add_argument(
        "--crop-scale",
        default="0.5,1.0",
        help="random resized crop's area range (min,max); 1,1 turns cropping off",
    )
    p.add_argument("--jitter", type=float, default=0.2, help="colour jitter strength (0: none)")
    p.add_argument(
        "--bn-stats",
        action="store_true",
        help="phase 2 re-estimates the BatchNorm statistics (default: keep the pretrained ones)",
    )
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--optimizer", default="adamw")
    p.add_argument("--schedule", default="onecycle")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise CLIError(f"--split: expected three fractions like 0.75,0.15,0.10, got {text!r}")
    return values  # type: ignore[return-value]


def _pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise CLIError(f"--crop-scale: expected two fractions like 0.5,1.0, got {text!r}") from None
    if not 0 < low <= high <= 1:
        raise CLIError(f"--crop-scale: expected 0 < min <= max <= 1, got {text!r}")
    return low, high


def run(args: argparse.Namespace) -> int:
    crop_scale, fractions = _pair(args.crop_scale), _fractions(args.split)
    torch.manual_seed(args.seed)
    pretrained = load(args.model, weights=args.weights)
    pre = pretrained.preprocess
    image_size = args.image_size or pre.size
    data = load_image_folder(
        args.data,
        image_size=image_size,
        crop_pct=pre.crop_pct,
        mean=pre.mean_01,
        std=pre.std_01,
        fractions=fractions,
        seed=args.seed,
        batch_size=args.batch_size,
        workers=args.workers,
        augment=not args.no_augment,
        crop_scale=crop_scale,
        jitter=args.jitter,
    )
    counts = {name: len(split) for name, split in data.splits.items()}
    if is_main_process():  # under torchrun, rank 0 alone speaks
        print(f"{args.data}: {len(data.classes)} classes, split {counts}")

    # The new head: the base's global average pooling feeds a fresh dense layer.
    model = pretrained.model
    classifier = model_info(args.model).classifier
    old = model.get_submodule(classifier)
    model.set_submodule(classifier, nn.Linear(old.in_features, len(data.classes)))
    config = {
        "model": {
            "name": args.model,
            "num_classes": len(data.classes),
            "in_channels": 3,
            "options": {},
        },
        "data": {
            "source": str(args.data),
            "input_size": [3, image_size, image_size],
            "class_names": list(data.classes),
            "mean": list(pre.mean_01),
            "std": list(pre.std_01),
            "crop_pct": pre.crop_pct,
            "split": counts,
        },
        "finetune": {
            "weights": pretrained.weights.name if pretrained.weights else None,
            "frozen_epochs": args.frozen_epochs,
            "epochs": args.epochs,
            "lr": args.lr,
            "lr_factor": args.lr_factor,
            "patience": args.patience,
            "augment": not args.no_augment,
            "crop_scale": list(crop_scale),
            "jitter": args.jitter,
            "bn_stats": args.bn_stats,
        },
    }
    start = time.perf_counter()
    history = fine_tune(
        model,
        data.train,
        data.valid,
        classifier=classifier,
        frozen_epochs=args.frozen_epochs,
        epochs=args.epochs,
        lr=args.lr,
        lr_factor=args.lr_factor,
        patience=args.patience,
        bn_stats=args.bn_stats,
        out_dir=args.out,
        overwrite=args.overwrite,
        optimizer=args.optimizer,
        schedule=args.schedule,
        device=args.device,
        precision=args.precision,
        seed=args.seed,
        config=config,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    if not is_main_process():
        return 0  # rank 0 tests the best weights and writes the report
    for row in history:
        val = f"  val_accuracy {row['val_accuracy']:.4f}" if "val_accuracy" in row else ""
        print(f"phase {row['phase']} epoch {row['epoch']}: accuracy {row['accuracy']:.4f}{val}")
    run_dir = RunDir(args.out)
    if (run_dir / rundir.BEST).is_file():
        load_checkpoint(run_dir / rundir.BEST, model)
    result = {"train_seconds": seconds}
    if data.test is not None:
        metrics = Trainer(model, device=args.device, progress=False).evaluate(data.test)
        result.update({f"test_{k}": v for k, v in metrics.items()})
        print(f"test accuracy {metrics['accuracy']:.4f} on {counts['test']} images")
    run_dir.write_json(TEST_METRICS, result)
    _plot(history, run_dir)
    print(f"run written to {args.out}; try: cnnkit predict {args.out} IMAGE")
    return 0


def _plot(history: list[dict], run_dir: RunDir) -> None:
    from cnnkit.viz.training import plot_history  # matplotlib is slow to import; only here

    plot_history(history, run_dir / rundir.HISTORY_PLOT)
