"""``cnnkit train``: train a registered model on a named dataset into a run directory."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from cnnkit import __version__
from cnnkit.cli import CLIError
from cnnkit.cli._common import add_training_arguments, finish_run, parse_options, print_class_table
from cnnkit.data import DATASETS, TensorBatches, load_dataset
from cnnkit.device import pick_device
from cnnkit.models import create_model, list_models
from cnnkit.train import (
    EarlyStopping,
    NonFiniteLossError,
    Trainer,
    make_optimizer,
    rundir,
    seed_everything,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a dataset into a run directory")
    p.add_argument("--model", required=True, help="a registered model (see `cnnkit models`)")
    p.add_argument("--data", default="fashion-mnist", help=f"one of: {', '.join(DATASETS)}")
    p.add_argument("--data-root", default=None, help="folder holding the dataset's files")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", required=True, help="run directory, e.g. runs/NAME")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument(
        "--model-option", action="append", default=[], metavar="KEY=VALUE", help="builder option"
    )
    add_training_arguments(p)
    p.set_defaults(func=run)


AUTO_BATCH_LIMIT = 1024  # past this, larger batches only hurt accuracy per epoch on small images


def resolve_batch_size(
    value: str, model: torch.nn.Module, input_size: tuple, optimizer: str, device: str
) -> int:
    """An integer, or ``auto``: the largest batch the memory planner says fits the device's free
    memory (at most :data:`AUTO_BATCH_LIMIT`)."""
    if value != "auto":
        try:
            size = int(value)
        except ValueError:
            size = 0
        if size < 1:
            raise CLIError(f"--batch-size: expected a positive integer or 'auto', got {value!r}")
        return size
    from cnnkit.memory import max_batch_size

    target = pick_device(device)
    size = max_batch_size(
        model,
        input_size,
        mode="train",
        optimizer=lambda params: make_optimizer(optimizer, params),  # the trainer's exact state
        device=target,
        limit=AUTO_BATCH_LIMIT,
    )
    if size < 1:
        raise CLIError(f"--batch-size auto: not even one image fits the free memory of {target}")
    print(
        f"--batch-size auto: {size} (the largest that fits {target}'s free memory, at most {AUTO_BATCH_LIMIT})"
    )
    return size


def train_run(args: argparse.Namespace, extra_config: dict[str, Any] | None = None) -> int:
    if args.model not in list_models():
        raise CLIError(f"unknown model {args.model!r}; choose one of: {', '.join(list_models())}")
    if args.epochs < 1:
        raise CLIError(f"--epochs: expected a positive integer, got {args.epochs}")
    seed_everything(args.seed)
    data = load_dataset(args.data, args.data_root)
    channels = data.input_size[0]
    options = parse_options(getattr(args, "model_option", []))
    model = create_model(
        args.model, num_classes=len(data.class_names), in_channels=channels, **options
    )
    batch_size = resolve_batch_size(
        args.batch_size, model, data.input_size, args.optimizer, args.device
    )
    trainer = Trainer(
        model,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        label_smoothing=args.label_smoothing,
        device=args.device,
        precision=args.precision,
        seed=args.seed,
        callbacks=[EarlyStopping(patience=args.patience)] if args.patience else [],
        out_dir=args.out,
        progress=not args.no_progress,
        config={
            "cnnkit_version": __version__,
            "command": ["cnnkit", *sys.argv[1:]],
            "model": {
                "name": args.model,
                "num_classes": len(data.class_names),
                "in_channels": channels,
                "options": options,
            },
            "data": {
                "name": data.name,
                "root": args.data_root,
                "input_size": list(data.input_size),
                "mean": list(data.mean),
                "std": list(data.std),
                "class_names": list(data.class_names),
                "train_limit": args.train_limit,
                "flip": args.flip,
            },
            **(extra_config or {}),
        },
    )
    fmt = trainer.precision.memory_format
    x_train, y_train = data.train
    if args.train_limit:
        x_train, y_train = x_train[: args.train_limit], y_train[: args.train_limit]
    train = TensorBatches(
        x_train, y_train, batch_size, shuffle=True, seed=args.seed, mean=data.mean, std=data.std,
        flip=args.flip, device=trainer.device, memory_format=fmt,
    )  # fmt: skip
    valid = TensorBatches(*data.valid, 500, mean=data.mean, std=data.std, device=trainer.device)
    if trainer.dist.is_main:  # under torchrun, rank 0 alone speaks
        print(
            f"training {args.model} on {data.name}: {len(x_train)} images, batch {batch_size}, "
            f"{args.epochs} epochs, {trainer.device} {trainer.precision.name}"
            f"{' channels_last' if trainer.precision.channels_last else ''} -> {args.out}"
        )
    start = time.perf_counter()
    try:
        trainer.fit(train, valid, epochs=args.epochs, resume=args.resume, overwrite=args.overwrite)
    except NonFiniteLossError as exc:
        print(f"cnnkit train: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: checkpoint saved to {trainer.run / rundir.LAST}; continue with --resume"
        )
        return 130
    minutes = (time.perf_counter() - start) / 60
    if not trainer.dist.is_main:
        return 0  # under torchrun, rank 0 tests the model and writes the report
    if trainer.stop_reason:
        print(trainer.stop_reason)
    metrics = finish_run(trainer.run, trainer, data)
    print(f"\ntrained in {minutes:.1f} min; test accuracy {metrics['test_accuracy']:.2%}")
    print_class_table(data.class_names, list(metrics["per_class_accuracy"].values()))
    print(
        f"results in {args.out}/ ({', '.join(sorted(p.name for p in trainer.run.path.iterdir()))})"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    return train_run(args)
