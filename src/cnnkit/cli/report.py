"""``cnnkit report RUN [--out FILE]``: one self-contained HTML file for a run (``cnnkit.deploy.report``):
configuration, metric curves, the task's tables, sample predictions drawn, feature maps."""

from __future__ import annotations

import argparse


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `cnnkit train` or `cnnkit finetune`")
    p.add_argument("--out", default=None, help="the HTML file (default: RUN/report.html)")
    p.add_argument(
        "--no-eval", action="store_true",
        help="do not load the test split again (no confusion matrix, samples or feature maps)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit.deploy.report import write_report

    path = write_report(args.run, args.out, evaluate=not args.no_eval)
    print(f"{path}: {path.stat().st_size / 1024:.0f} KiB, self-contained (open it in any browser)")
    return 0
