"""``cnnkit evaluate RUN``: test loss, accuracy and a per-class table for a trained run."""

from __future__ import annotations

import argparse

from cnnkit.cli._common import load_run, print_class_table, test_report
from cnnkit.data import load_dataset
from cnnkit.train import Trainer, rundir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's best weights on the test set")
    p.add_argument("run", help="run directory written by `cnnkit train`")
    p.add_argument("--checkpoint", choices=[rundir.BEST, rundir.LAST], default=rundir.BEST)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _, config, model = load_run(args.run, args.checkpoint)
    spec = config.get("data", {})
    data = load_dataset(spec.get("name", "fashion-mnist"), spec.get("root"))
    trainer = Trainer(model, device=args.device, progress=False)
    metrics, _, _ = test_report(trainer, data)
    print(f"{args.run} ({args.checkpoint}) on {data.name} test set, {len(data.test[1])} images")
    print(f"  loss      {metrics['test_loss']:.4f}\n  accuracy  {metrics['test_accuracy']:.2%}\n")
    print_class_table(data.class_names, list(metrics["per_class_accuracy"].values()))
    return 0
