"""``cnnkit speedrun fashion-mnist [--target 0.94]``: time-to-accuracy — a small fast network
(``speednet``) and a recipe for it, trained by ``cnnkit train``'s machinery (run directory,
``--resume``, every ``train`` option), then one report: wall time, epochs, the test accuracy and
whether it met the target.

The test set is scored once, at the end of the schedule; every decision on the way (the best
epoch, and the recipe's tuning) uses the validation split. ``RUN/speedrun.json`` holds the report.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from cnnkit.cli._common import add_training_arguments

DATASETS = ("fashion-mnist",)
DEFAULT_TARGET = 0.94  # the issue's: Google AutoML's 24-hour result on Fashion-MNIST was 93.9%

# ---- the recipe -----------------------------------------------------------------------------------
# Started from airbench94's constants (``hyp`` in airbench94.py, 94% on CIFAR-10), then tuned on the
# validation split on 2 AVX2 cores (docs/notes/issue-15.md; test accuracy after the run, seed 0):
#   airbench's constants (lr 1.0, wd 1.3e-3, smoothing 0.2, crop=2,flip), 10 epochs   92.28%
#   lr 0.5, wd 5e-4, smoothing 0.1                                                    92.80%
#   ... and flip only (no crop), 10 epochs                                            93.56%
#   ... with ReLU and a 9-minute budget (10.2 epochs)                                 93.51%
#   ... GELU, the heap kept (cnnkit.device), 14 epochs                                  93.68%
#   ... batch 256 (the same images/s on a CPU, 4x the steps), lr, EMA scaled, 13 epochs 93.70%
#   ... ReLU and airbench's 2x2 whitening stem (whiten=true), 15 epochs                 94.07%
#   (the benchmark's 3 seeds of this recipe: 93.81 / 93.93 / 93.76%; nine runs, median 93.92%)
#   ... flip-translate TTA, one validation at the end (benchmark, 3 seeds)       93.88 / 93.97 / 93.89%
#   ... 1-pixel crops (crop=1,flip; benchmark, 3 seeds)                           94.02 / 94.07 / 94.14%
# airbench's recipe regularizes for a harder dataset than ten epochs of Fashion-MNIST can use: with
# it, training accuracy never passed validation's (the 2-pixel crops went first; the whitening stem
# made the net fit the training set, 98%, and 1-pixel crops came back). Every entry is a
# `cnnkit train` option, so a tuning run overrides it on the command line.
RECIPE: dict[str, Any] = {
    # airbench's conv groups, widths 32/64/128 for 1x28x28 on a CPU (models/speednet.py)
    "model": "speednet",
    # a ceiling: the time budget ends the run (about 10 epochs on 2 AVX2 cores)
    "epochs": 100,
    # 9 minutes of training, so that loading, validation and the test report fit in 10 minutes
    "time_budget": 540.0,
    # airbench's 1,024 ran at the same images/s as 256 on 2 CPU cores (1,423 vs 1,417, the heap
    # kept): a CPU gains nothing from the larger batch, and 256 takes 4x the steps per epoch
    "batch_size": "256",
    # SGD, momentum 0.9, 1cycle over the budget; airbench's decoupled rate 11.5 per 1,024 images
    # is 1.05 in torch's form: half of it won on validation at batch 1,024, scaled by 256/1,024
    "optimizer": "sgd",
    "lr": 0.125,
    "weight_decay": 5e-4,  # airbench's 0.0153 decoupled is 1.3e-3 in torch's form: too much here
    "schedule": "onecycle",
    "label_smoothing": 0.1,  # airbench: 0.2
    # airbench: translate by up to 2 pixels and flip. The 2-pixel translation cost 0.8 points
    # before the whitening stem; with it, 1 pixel lowered the validation loss on all three seeds
    # (.248 vs .275) at a tied validation accuracy (.9486 / .9476 / .9478 vs .9474 / .9478 / .9486)
    "batch_augment": "crop=1,flip",
    # airbench: lookahead towards an average of decay 0.95 per step of 1,024 images (0.95^5 every
    # 5 steps, ramped in); here the average itself is evaluated and kept as the best weights, at
    # 0.95^(1/4) per step of 256: the same horizon in images
    "ema": 0.9873,
    # airbench's tta_level 2: the image and its mirror, and both shifted a pixel diagonally each
    # way (6 passes): +0.08 to +0.20 points of validation accuracy over the mirror alone on the
    # three benchmark runs of session 27 (edge padding)
    "tta": "flip-translate",
    # validate once, after the last epoch, as airbench does: 6 passes over 5,000 images each epoch
    # would take ~7 s of the budget's ~36 s epochs
    "val_every": 0,
}


#: the recipe's model options, before the user's --model-option (which win), for the recipe's model
RECIPE_MODEL_OPTIONS = [
    # airbench's fixed 2x2 patch-whitening stem; `cnnkit train` computes the training images'
    # patch covariance it starts from (Classify.model_options_from_data)
    "whiten=true",
    # 1.17x GELU's training images/s on 2 AVX2 cores (1,318 vs 1,127), the same accuracy
    "activation=relu",
]

# ---- the 30-minute recipe, for targets above 94% (the 95% in 30 minutes) ---------------
# The same recipe on wider groups for a 1,720-s clock (the six test-time views take ~40 s after
# it): seed 0, 23 epochs, validation 95.30%, test 94.73% on 2 AVX2 cores (session 28). Session 29's
# alternatives at the same clock stayed on that plateau: random erasing (validation 95.28%, test
# 94.60%) and airbench96's residual groups at 40/80/160 (the same images/s; 94.98%, 94.85%); all
# 60,000 images (--data-option train_on_valid=true, unjudgeable on validation): 94.92 / 94.69%
# (seeds 0, 1). 95% in 30 minutes is not met on that CPU (docs/notes/issue-15.md).
LONG_TIME_BUDGET = 1720.0
LONG_MODEL_OPTIONS = ["widths=[48,96,192]"]


def apply_recipe(args: argparse.Namespace) -> None:
    """The recipe for ``args.target``, in place, under what the user chose: a target above 94%
    takes the 30-minute clock and wider groups unless ``--time-budget``, ``--epochs`` or a
    ``widths`` model option says otherwise; ``--epochs N`` alone runs N epochs without a clock."""
    long = args.target > DEFAULT_TARGET
    if args.time_budget is None and args.epochs == RECIPE["epochs"]:
        args.time_budget = LONG_TIME_BUDGET if long else RECIPE["time_budget"]
    if args.model == RECIPE["model"]:
        chosen = {option.partition("=")[0].strip() for option in args.model_option}
        extra = [o for o in LONG_MODEL_OPTIONS if long and o.partition("=")[0] not in chosen]
        args.model_option = [*RECIPE_MODEL_OPTIONS, *extra, *args.model_option]


def _target(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected an accuracy in (0, 1], got {text!r}")
    return value


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=DATASETS, help="the dataset to reach the target on")
    p.add_argument(
        "--target", type=_target, default=DEFAULT_TARGET,
        help=f"the test accuracy to reach (default {DEFAULT_TARGET})",
    )  # fmt: skip
    p.add_argument("--model", default=RECIPE["model"], help="a registered model")
    add_training_arguments(p, model_required=False)
    # the clock is chosen by the target when the user names none (apply_recipe)
    defaults = {k: v for k, v in RECIPE.items() if k not in ("model", "time_budget")}
    p.set_defaults(func=run, time_budget=None, **defaults)


def speedrun_report(
    run_dir: Any, target: float, wall_seconds: float, dataset: str, seed: int
) -> dict[str, Any]:
    """The report of a finished run directory: ``speedrun.json``'s contents."""
    from cnnkit.train import RunDir, rundir

    run = RunDir(run_dir)
    history = run.read_metrics()
    config = run.read_config()
    test = _read_json(run / rundir.TEST_METRICS)
    accuracy = float(test["test_accuracy"])
    train_seconds = sum(float(row.get("seconds", 0.0)) for row in history)
    # the first epoch whose validation accuracy reached the target, and the training time to it
    reached = next(
        (i for i, row in enumerate(history) if row.get("val_accuracy", 0.0) >= target), None
    )
    return {
        "dataset": dataset,
        "model": config["model"]["name"],
        "seed": seed,
        "target": target,
        "test_accuracy": accuracy,
        "target_met": accuracy >= target,
        "epochs": len(history),
        "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,
        "val_accuracy": [row.get("val_accuracy") for row in history],
        "val_target_epoch": None if reached is None else reached + 1,
        "val_target_train_seconds": None
        if reached is None
        else sum(float(row.get("seconds", 0.0)) for row in history[: reached + 1]),
        "precision": config["trainer"]["precision"],
        "run": str(run.path),
    }


def _read_json(path: Any) -> dict[str, Any]:
    import json

    return json.loads(path.read_text())


def run(args: argparse.Namespace) -> int:
    from cnnkit.cli._common import default_run_dir
    from cnnkit.cli.train import train_run
    from cnnkit.train import RunDir, distributed, rundir

    start = time.perf_counter()
    args.data = args.dataset
    apply_recipe(args)
    args.out = args.out or str(default_run_dir("speedrun", args.dataset))
    code = train_run(args, extra_config={"speedrun": {"dataset": args.dataset}})
    if code or not distributed.is_main_process():
        return code
    report = speedrun_report(
        args.out, args.target, time.perf_counter() - start, args.dataset, args.seed
    )
    RunDir(args.out).write_json(rundir.SPEEDRUN, report)
    met = "met" if report["target_met"] else "NOT met"
    print(
        f"\nspeedrun {args.dataset}: test accuracy {report['test_accuracy']:.2%} (target "
        f"{args.target:.2%}: {met}) after {report['epochs']} epochs; training "
        f"{report['train_seconds']:.1f} s, wall {report['wall_seconds']:.1f} s (loading, "
        f"training, validation, the test report) -> {args.out}/{rundir.SPEEDRUN}"
    )
    return 0
