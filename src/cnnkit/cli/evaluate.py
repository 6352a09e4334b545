"""``cnnkit evaluate RUN``: the run's task report (for classification: loss, accuracy and a per-class
table) on the test split of the data the run was trained on, preprocessed as it was."""

from __future__ import annotations

import argparse

BEST, LAST = "best.safetensors", "last.safetensors"  # cnnkit.train.rundir's names (a test checks)


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `cnnkit train` or `cnnkit finetune`")
    p.add_argument("--checkpoint", choices=[BEST, LAST], default=BEST)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision", choices=["auto", "fp32", "bf16"], default=None,
        help="default: the precision the run was trained and tested in (config.json)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--workers", type=int, default=2, help="DataLoader processes for image files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit.cli._common import load_run
    from cnnkit.data.datasets import load_data_from_meta
    from cnnkit.device import pick_device
    from cnnkit.train import Trainer

    pick_device(args.device)  # a bad --device fails before the run and its data load
    _, config, model, task, meta = load_run(args.run, args.checkpoint)
    data = load_data_from_meta(meta, workers=args.workers)
    # The run's own precision by default, so that its test report is reproduced exactly.
    precision = args.precision or config.get("trainer", {}).get("precision")
    trainer = Trainer(model, task=task, device=args.device, precision=precision, progress=False)
    test = data.batches("test", args.batch_size, device=trainer.device, workers=args.workers)
    metrics = task.report(trainer, test, meta, None)
    print(
        f"{args.run} ({args.checkpoint}) on the {meta.name} test split, {len(data.test[0])} images"
    )
    task.print_report(metrics, meta)
    return 0
