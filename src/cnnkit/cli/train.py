"""``cnnkit train``: train a registered model on a dataset, for a task, into a run directory."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.cli import CLIError
from cnnkit.cli._common import (
    add_training_arguments,
    compare_resume_config,
    default_run_dir,
    finish_run,
    parse_options,
    task_from_args,
)

if TYPE_CHECKING:
    import torch

    from cnnkit.data.datasets import ImageData
    from cnnkit.tasks import Task
    from cnnkit.train import Trainer
    from cnnkit.train.callbacks import Callback


def register(p: argparse.ArgumentParser) -> None:
    add_training_arguments(p)
    p.add_argument(
        "--skip-invalid", action="store_true",
        help="annotation files (--task detect, segment): leave bad records out and list them, "
        "as `cnnkit data show --skip-invalid` does (recorded, so evaluate leaves them out too)",
    )  # fmt: skip
    p.add_argument(
        "--nproc", type=int, default=None, metavar="N",
        help="train with N processes on this machine (DDP): runs `torchrun --standalone "
        "--nproc_per_node N -m cnnkit train ...` for you; --batch-size is per process",
    )  # fmt: skip
    p.set_defaults(func=run)


def launch_torchrun(argv: list[str], nproc: int) -> int:
    """Run this ``cnnkit train`` command line (``argv`` less ``--nproc``) under
    ``torchrun --standalone --nproc_per_node nproc``; its exit status."""
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(nproc), "-m", "cnnkit", *rest]
    print(f"launching: torchrun --standalone --nproc_per_node {nproc} -m cnnkit {' '.join(rest)}")
    sys.stdout.flush()
    return subprocess.call(command)


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
    from cnnkit.device import pick_device
    from cnnkit.memory import max_batch_size
    from cnnkit.train import make_optimizer

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


def run_config(args: argparse.Namespace, model: dict[str, Any], data: ImageData) -> dict[str, Any]:
    """What ``config.json`` records besides the trainer's settings and the task."""
    from cnnkit import __version__

    return {
        "cnnkit_version": __version__,
        "command": ["cnnkit", *getattr(args, "argv", sys.argv[1:])],
        "model": model,
        "data": {
            **data.meta.to_config(),
            "train_limit": args.train_limit,
            "flip": args.flip,
            # only when set, so that runs written before it existed resume unchanged
            **({"batch_augment": spec} if (spec := getattr(args, "batch_augment", None)) else {}),
        },
    }


def make_trainer(
    args: argparse.Namespace,
    model: torch.nn.Module,
    task: Task,
    config: dict[str, Any],
    callbacks: list[Callback] | None = None,
    **options: Any,
) -> Trainer:
    from cnnkit.train import EarlyStopping, Trainer

    extra = list(callbacks or [])
    return Trainer(
        model,
        task=task,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        time_budget=getattr(args, "time_budget", None),
        device=args.device,
        precision=args.precision,
        seed=args.seed,
        callbacks=([EarlyStopping(patience=args.patience)] if args.patience else []) + extra,
        out_dir=args.out,
        progress=not args.no_progress,
        config=config,
        on_nonfinite=args.on_nonfinite,
        ema=getattr(args, "ema", None),
        val_every=getattr(args, "val_every", 1),
        **options,
    )


def tensorboard_callbacks(args: argparse.Namespace, data: ImageData) -> list[Callback]:
    """With ``--tensorboard``: a :class:`cnnkit.deploy.tensorboard.TensorBoardLogger` into
    ``RUN/tensorboard``, drawing 8 validation (or test) images; otherwise none."""
    if not getattr(args, "tensorboard", False):
        return []
    import torch

    from cnnkit.deploy.tensorboard import EVENTS_DIR, TensorBoardLogger

    split = "valid" if data.splits.get("valid") is not None else "test"
    sample = None
    if data.splits.get(split) is not None:
        sample, _ = next(iter(data.batches(split, 8, device=torch.device("cpu"), workers=0)))
    return [TensorBoardLogger(Path(args.out) / EVENTS_DIR, sample=sample, meta=data.meta)]


def report(args: argparse.Namespace, trainer: Trainer, data: ImageData, minutes: float) -> None:
    """The end of a run: test report, plots, and where the files are (every process evaluates
    its share under torchrun; rank 0 writes and prints)."""
    assert trainer.run is not None
    metrics = finish_run(trainer.run, trainer, data, args.workers)
    if not trainer.dist.is_main:
        return
    if trainer.stop_reason:
        print(trainer.stop_reason)
    print(f"\ntrained in {minutes:.1f} min")
    if metrics:
        print(f"test set ({data.meta.name}):")
        trainer.task.print_report(metrics, data.meta)
    print(f"results in {args.out}/ ({', '.join(trainer.run.results())})")


def train_run(args: argparse.Namespace, extra_config: dict[str, Any] | None = None) -> int:
    from cnnkit.data.datasets import load_data
    from cnnkit.device import pick_device
    from cnnkit.models import list_models, model_info
    from cnnkit.train import NonFiniteLossError, RunDir, rundir, seed_everything
    from cnnkit.train.checkpoint import DiskFullError

    if args.model not in list_models(task=None):
        raise CLIError(f"unknown model {args.model!r}; choose one of: {', '.join(list_models())}")
    pick_device(args.device)  # a bad --device fails before any data loads
    task = task_from_args(args)
    if model_info(args.model).task != task.model_task:
        raise CLIError(
            f"--model {args.model} is a {model_info(args.model).task} model; the {task.name} task "
            f"takes {task.model_task} models: {', '.join(list_models(task=task.model_task))}"
        )
    args.out = args.out or str(default_run_dir(task.name, args.model))
    seed_everything(args.seed)
    options = parse_options(args.model_option)
    data = load_data(
        args.data,
        root=args.data_root,
        image_size=args.image_size,
        seed=args.seed,
        workers=args.workers,
        task=task.name,
        # options the model decides (superres: its scale), then --data-option's
        options={
            **task.data_options(args.model, options),
            **parse_options(args.data_option, "--data-option"),
        },
        skip_invalid=getattr(args, "skip_invalid", False),  # cnnkit demo has no --skip-invalid
    ).limit("train", args.train_limit)
    min_size = model_info(args.model).min_size
    if min(data.input_size[1:]) < min_size:
        raise CLIError(
            f"--model {args.model} takes images of at least {min_size}x{min_size}; {data.name} is "
            f"{data.input_size[1]}x{data.input_size[2]}: pass --image-size {min_size} (or larger)"
        )
    # Options the data decides (detect: anchors by K-Means on the training boxes; segment: the
    # class frequencies a U-Net's head starts from; classify: the patch covariance of a
    # whitening stem), recorded with the model's options so that create_model rebuilds the same
    # model; --model-option wins.
    options = {**task.model_options_from_data(data, args.model, options), **options}
    model = task.build_model(args.model, data.meta, **options)
    batch_size = resolve_batch_size(
        args.batch_size, model, data.input_size, args.optimizer, args.device
    )
    model_spec = task.model_spec(args.model, data.meta, options)
    trainer = make_trainer(
        args,
        model,
        task,
        {**run_config(args, model_spec, data), **(extra_config or {})},
        callbacks=tensorboard_callbacks(args, data),
    )
    if trainer.dist.is_main:  # what --skip-invalid left out, listed as `cnnkit data show` does
        from cnnkit.cli.data import print_warnings

        print_warnings(list(data.warnings))
    fmt = trainer.precision.memory_format
    from cnnkit.data.augment import BatchAugment
    from cnnkit.data.datasets import Augment

    batch_augment = BatchAugment.parse(args.batch_augment) if args.batch_augment else None
    train = data.batches(
        "train", batch_size, shuffle=True, seed=args.seed,
        augment=Augment(flip=args.flip, batch=batch_augment),
        device=trainer.device, memory_format=fmt, workers=args.workers,
    )  # fmt: skip
    valid = None
    if data.splits.get("valid") is not None:
        valid = data.batches("valid", 500, device=trainer.device, workers=args.workers)
    run_dir = RunDir(args.out)
    if args.resume and (run_dir / rundir.CONFIG).is_file():
        merged, notes = compare_resume_config(
            run_dir.read_config(),
            trainer.run_config(args.epochs, batch_size),
            run_dir / rundir.CONFIG,
        )
        trainer.config = {k: v for k, v in merged.items() if k not in ("task", "trainer")}
        if trainer.dist.is_main:
            print("\n".join(notes) if notes else "", end="\n" if notes else "")
    if args.resume and not run_dir.has_checkpoint() and trainer.dist.is_main:
        print(
            f"--resume: {args.out} holds no checkpoint ({rundir.LAST}; no epoch had finished): "
            "starting the run from the beginning"
        )
    budget = f"{args.epochs} epochs"
    if args.time_budget is not None:
        budget = f"a time budget of {args.time_budget:g} s (at most {args.epochs} epochs)"
    why = ""
    if args.precision == "auto" and trainer.device.type == "cpu":
        native = trainer.precision.name == "bf16"
        why = (
            " (auto: this CPU computes bf16 natively)" if native else " (auto: no native bf16 here)"
        )
    if trainer.dist.is_main:  # under torchrun, rank 0 alone speaks
        print(
            f"training {args.model} ({task.name}) on {data.name}: {len(data.train[0])} images, "
            f"batch {batch_size}, {budget}, {trainer.device} {trainer.precision.name}{why}"
            f"{' channels_last' if trainer.precision.channels_last else ''} -> {args.out}"
        )
    start = time.perf_counter()
    try:
        trainer.fit(train, valid, epochs=args.epochs, resume=args.resume, overwrite=args.overwrite)
    except (NonFiniteLossError, DiskFullError) as exc:
        print(f"cnnkit train: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if trainer.checkpoint_epoch:
            where = (
                f"from epoch {trainer.checkpoint_epoch + 1} (the checkpoint "
                f"{args.out}/{rundir.LAST})"
            )
        else:
            where = "from the beginning (no epoch had finished)"
        print(f"\ninterrupted: --resume continues the run {where}")
        return 130
    report(args, trainer, data, (time.perf_counter() - start) / 60)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.nproc is not None:
        if args.nproc < 1:
            raise CLIError(f"--nproc: expected a positive number of processes, got {args.nproc}")
        if "WORLD_SIZE" in os.environ:
            raise CLIError("--nproc: already running under torchrun; leave --nproc out")
        if args.nproc > 1:
            return launch_torchrun(getattr(args, "argv", sys.argv[1:]), args.nproc)
    return train_run(args)
