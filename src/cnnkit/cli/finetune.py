"""``cnnkit finetune``: transfer a pretrained model to your data, in the notes' two phases.

    cnnkit finetune --model efficientnet_lite0 --data DIR --frozen-epochs 5 --epochs 10

``--data`` is anything ``cnnkit train`` takes: a folder with one sub-folder per class, a .csv/.json
list of path,label (split 75/15/10, stratified and seeded, decoded once, served with augmentation),
or ``fashion-mnist`` (grey images turned RGB and resized on each batch). The options are
``cnnkit train``'s, plus the phases: ``--epochs`` counts every epoch, as in ``train``; the first
``--frozen-epochs`` train a new dense head on the frozen base (its BatchNorm layers kept in inference
mode), the rest unfreeze and continue at ``--lr × --lr-factor`` with early stopping (``--patience``),
the BatchNorm statistics still the pretrained ones unless ``--bn-stats``; the model keeps the best
validation epoch of either phase. The run directory is ``cnnkit train``'s, so ``--resume`` (in either
phase), ``cnnkit evaluate`` and ``cnnkit predict`` work on it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from cnnkit.cli import CLIError
from cnnkit.cli._common import (
    _positive_float,
    add_training_arguments,
    default_run_dir,
    task_from_args,
)


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a pretrained model, e.g. efficientnet_lite0")
    add_training_arguments(p, model_required=False)
    p.add_argument("--weights", default=None, help="checkpoint file (default: the registered one)")
    p.add_argument("--frozen-epochs", type=int, default=5, help="phase 1: the head alone")
    p.add_argument(
        "--lr-factor",
        type=_positive_float("--lr-factor"),
        default=0.1,
        help="phase 2 learning rate = lr * lr-factor",
    )
    p.add_argument(
        "--split", default="0.75,0.15,0.10", help="image files: train,valid,test fractions"
    )
    p.add_argument("--no-augment", action="store_true", help="no crop/flip/colour augmentation")
    p.add_argument(
        "--crop-scale",
        default="0.5,1.0",
        help="random resized crop's area range (min,max); 1,1 turns cropping off",
    )
    p.add_argument("--jitter", type=_jitter, default=0.2, help="colour jitter strength (0: none)")
    p.add_argument(
        "--bn-stats",
        action="store_true",
        help="phase 2 re-estimates the BatchNorm statistics (default: keep the pretrained ones)",
    )
    p.set_defaults(func=run, lr=1e-3, batch_size="32", patience=3, epochs=10)


def _jitter(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 1 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise CLIError(
            f"--split: expected three fractions >= 0 summing to 1 like 0.75,0.15,0.10, got {text!r}"
        )
    return values


def _pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise CLIError(f"--crop-scale: expected two fractions like 0.5,1.0, got {text!r}") from None
    if not 0 < low <= high <= 1:
        raise CLIError(f"--crop-scale: expected 0 < min <= max <= 1, got {text!r}")
    return low, high


def run(args: argparse.Namespace) -> int:
    import torch
    from torch import nn

    from cnnkit.cli.train import make_trainer, report, run_config, tensorboard_callbacks
    from cnnkit.data.datasets import Augment, load_data
    from cnnkit.data.folder import SplitError
    from cnnkit.device import pick_device
    from cnnkit.models import model_info
    from cnnkit.pretrained import list_weights, load
    from cnnkit.train import seed_everything
    from cnnkit.train.checkpoint import DiskFullError
    from cnnkit.train.distributed import is_main_process
    from cnnkit.train.freeze import fine_tune

    if args.model not in list_weights():
        raise CLIError(
            f"--model: no pretrained weights for {args.model!r}; choose one of {list_weights()}"
        )
    if not 0 <= args.frozen_epochs <= args.epochs:
        raise CLIError(
            f"--frozen-epochs: expected 0 to --epochs ({args.epochs}), got {args.frozen_epochs}"
        )
    if args.time_budget is not None:
        raise CLIError("--time-budget: not available for finetune's two phases; give --epochs")
    for option, value in (("--ema", args.ema), ("--batch-augment", args.batch_augment)):
        if value is not None:
            raise CLIError(
                f"{option}: not available for finetune's two phases (cnnkit train has it)"
            )
    pick_device(args.device)  # a bad --device fails before any weights or data load
    if args.batch_size == "auto":
        raise CLIError("--batch-size auto: not available for finetune; give an integer")
    crop_scale, fractions = _pair(args.crop_scale), _fractions(args.split)
    task = task_from_args(args)
    args.out = args.out or str(default_run_dir(task.name, args.model))
    seed_everything(args.seed)
    pretrained = load(args.model, weights=args.weights)
    pre = pretrained.preprocess
    try:
        data = load_data(
            args.data,
            root=args.data_root,
            channels=3,
            image_size=args.image_size or pre.size,
            mean=pre.mean_01,
            std=pre.std_01,
            crop_pct=pre.crop_pct,
            fractions=fractions,
            seed=args.seed,
            workers=args.workers,
        ).limit("train", args.train_limit)
    except SplitError as exc:
        raise CLIError(f"--split {args.split}: {exc}") from None
    if is_main_process():  # under torchrun, rank 0 alone speaks
        counts = {k: len(v[1]) for k, v in data.splits.items() if v is not None}
        print(f"{data.name}: {len(data.class_names)} classes, split {counts} -> {args.out}")

    # The new head: the base's global average pooling feeds a fresh dense layer.
    model = pretrained.model
    classifier = model_info(args.model).classifier
    old = model.get_submodule(classifier)
    if not isinstance(old, nn.Linear):
        raise CLIError(f"--model {args.model}: its classifier {classifier!r} is not a dense layer")
    model.set_submodule(classifier, nn.Linear(old.in_features, len(data.class_names)))
    model_spec = {
        "name": args.model,
        "num_classes": len(data.class_names),
        "in_channels": 3,
        "options": {},
    }
    config = {
        **run_config(args, model_spec, data),
        "finetune": {
            "weights": pretrained.weights.name if pretrained.weights else None,
            "frozen_epochs": args.frozen_epochs,
            "lr_factor": args.lr_factor,
            "augment": not args.no_augment,
            "crop_scale": list(crop_scale),
            "jitter": args.jitter,
            "bn_stats": args.bn_stats,
        },
    }
    batch_size = int(args.batch_size)
    augment = (
        Augment(flip=True, crop_scale=crop_scale, jitter=args.jitter)
        if not args.no_augment
        else Augment(flip=args.flip)
    )
    device = torch.device("cpu")  # the loaders' device; the trainer moves batches to its own
    train = data.batches(
        "train", batch_size, shuffle=True, seed=args.seed, augment=augment, workers=args.workers,
        device=device,
    )  # fmt: skip
    valid = None
    if data.splits.get("valid") is not None:
        valid = data.batches("valid", batch_size, workers=args.workers, device=device)
    start = time.perf_counter()
    trainer_options = {
        "task": task,
        "optimizer": args.optimizer,
        "weight_decay": args.weight_decay,
        "schedule": args.schedule,
        "device": args.device,
        "precision": args.precision,
        "seed": args.seed,
        "config": config,
        "progress": not args.no_progress,
        "on_nonfinite": args.on_nonfinite,
        "val_every": args.val_every,
        "callbacks": tensorboard_callbacks(args, data),
    }
    try:
        fine_tune(
            model,
            train,
            valid,
            classifier=classifier,
            frozen_epochs=args.frozen_epochs,
            epochs=args.epochs,
            lr=args.lr,
            lr_factor=args.lr_factor,
            patience=args.patience,
            bn_stats=args.bn_stats,
            out_dir=args.out,
            overwrite=args.overwrite,
            resume=args.resume,
            **trainer_options,
        )
    except DiskFullError as exc:
        print(f"cnnkit finetune: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: --resume continues {args.out} from its last finished epoch")
        return 130
    # The report reloads best.safetensors into a trainer over the fine-tuned model.
    from cnnkit.train import RunDir

    trainer = make_trainer(args, model, task, config)
    trainer.history = RunDir(args.out).read_metrics()
    trainer.steps = RunDir(args.out).read_steps()
    report(args, trainer, data, (time.perf_counter() - start) / 60)
    return 0
