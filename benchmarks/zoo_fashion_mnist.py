"""Benchmark: each zoo model trained on the real Fashion-MNIST for a fixed time budget.

For every model: test accuracy (10,000 test images), training images/s, and forward FLOPs per image
(``torch.utils.flop_counter``, a multiply-add counted as 2 FLOPs) at the input size it is trained on.
The models are adapted to the data, as the issue asks: 1 input channel, 10 classes, and the smallest
input each accepts (Fashion-MNIST's 28×28 resized once, bilinearly, up front); LeNet-5 gets the
paper's input instead, the 28×28 image zero-padded to 32×32 and scaled so that the background is -0.1
and full ink 1.175.

The budget is in seconds of training per model, held by the trainer's time budget
(``Trainer(time_budget=...)``, ``cnnkit train --time-budget``): the 1cycle schedule follows elapsed
time and training stops when the budget is spent, mid-epoch if need be, whatever the machine does.
``--epochs N`` trains exactly N epochs instead.
Results go to stdout as a Markdown table (and to ``--out`` as JSON).

    .venv/bin/python benchmarks/zoo_fashion_mnist.py --seconds 60
    .venv/bin/python benchmarks/zoo_fashion_mnist.py --models resnet50_small alexnet vgg16 googlenet se_inception xception --seconds 600
    .venv/bin/python benchmarks/zoo_fashion_mnist.py --models lenet5 resnet18_small --seconds 300
    .venv/bin/python benchmarks/zoo_fashion_mnist.py --models resnet18_small --epochs 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from peers import cpu_line
from torch.utils.flop_counter import FlopCounterMode

from cnnkit.data import TensorBatches, load_fashion_mnist
from cnnkit.models import create_model
from cnnkit.tasks import get_task
from cnnkit.train import Trainer, seed_everything

# ---- configuration ---------------------------------------------------------------------------------
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics (/255)
# LeCun et al. 1998 §II.B: background -0.1, ink 1.175, i.e. (x/255 - mean) / std with these:
LENET_MEAN, LENET_STD = 0.1 / 1.275, 1 / 1.275

# The 10-minute recipe of the large models (``--seconds 600``): batch 32, so that the few thousand
# images two CPU cores train in 10 minutes are a few hundred optimizer steps; AdamW's peak 2e-3 for
# the BatchNorm nets, 3e-4 for the paper-faithful ones without BatchNorm (AlexNet, VGG-16 and
# GoogLeNet have none, as in their papers).
SHORT_BN = {"batch_size": 32}
SHORT_PLAIN = {"batch_size": 32, "lr": 3e-4}

MODELS: dict[str, dict] = {
    # name: input size (the model's minimum, or the paper's for LeNet-5), builder options, and
    # where a model trains better otherwise, the HYPER entries it overrides (LeNet-5's tanh/RBF
    # net: measured 89.3% at 5e-3 vs 88.5% at 2e-3 after 8 epochs; resnet18_small: the recipe of
    # its 3-epoch run in the README, `cnnkit train --batch-size 64 --label-smoothing 0.1 --flip`)
    "lenet5": {"size": 32, "options": {}, "hyper": {"lr": 5e-3}},
    "resnet18_small": {
        "size": 28,
        "options": {},
        "hyper": {"batch_size": 64, "label_smoothing": 0.1, "flip": True},
    },
    "resnet50_small": {"size": 28, "options": {}, "hyper": SHORT_BN},
    "alexnet": {"size": 67, "options": {}, "hyper": SHORT_PLAIN},
    "vgg16": {"size": 32, "options": {}, "hyper": SHORT_PLAIN},
    "googlenet": {"size": 65, "options": {}, "hyper": SHORT_PLAIN},
    "se_inception": {"size": 65, "options": {}, "hyper": SHORT_PLAIN},
    "xception": {"size": 71, "options": {}, "hyper": SHORT_BN},
}

HYPER = {
    "batch_size": 128,
    "optimizer": "adamw",
    "lr": 2e-3,  # peak of the 1cycle schedule
    "schedule": "onecycle",
    "label_smoothing": 0.0,
    "flip": False,  # random horizontal flips of the training images
    "eval_batch_size": 256,
    "seed": 0,
}
MAX_EPOCHS = 1000  # a ceiling only: the time budget ends the run


# ---- data -------------------------------------------------------------------------------------------
def hyper_for(name: str) -> dict:
    """HYPER with the model's own overrides."""
    return {**HYPER, **MODELS[name].get("hyper", {})}


def adapt_images(images: torch.Tensor, name: str, size: int) -> torch.Tensor:
    """uint8 (N, 28, 28) → uint8 (N, 1, size, size): zero-padded for LeNet-5, else resized."""
    x = images[:, None]
    if name.startswith("lenet"):
        pad = (size - 28) // 2
        return F.pad(x, (pad, size - 28 - pad, pad, size - 28 - pad))  # 0 is the background
    if size == 28:
        return x
    resized = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def batches(images: torch.Tensor, labels: torch.Tensor, name: str, shuffle: bool) -> TensorBatches:
    mean, std = (LENET_MEAN, LENET_STD) if name.startswith("lenet") else (FASHION_MEAN, FASHION_STD)
    hyper = hyper_for(name)
    return TensorBatches(
        images,
        labels,
        hyper["batch_size"] if shuffle else hyper["eval_batch_size"],
        shuffle=shuffle,
        seed=hyper["seed"],
        mean=(mean,),
        std=(std,),
        flip=shuffle and hyper["flip"],  # training batches only
    )


# ---- measurements -----------------------------------------------------------------------------------
def forward_flops(model: torch.nn.Module, size: int) -> int:
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    return counter.get_total_flops()


# ---- one model --------------------------------------------------------------------------------------
def run_model(name: str, seconds: float, data: tuple, fixed_epochs: int | None = None) -> dict:
    (x_train, y_train), _, (x_test, y_test) = data
    size, options, hyper = MODELS[name]["size"], MODELS[name]["options"], hyper_for(name)
    seed_everything(hyper["seed"])
    model = create_model(name, num_classes=10, in_channels=1, **options)
    flops = forward_flops(model, size)
    images = adapt_images(x_train, name, size)
    trainer = Trainer(
        model,
        optimizer=hyper["optimizer"],
        lr=hyper["lr"],
        schedule=hyper["schedule"],
        task=get_task("classify", label_smoothing=hyper["label_smoothing"]),
        seed=hyper["seed"],
        device="cpu",
        progress=False,
        time_budget=None if fixed_epochs is not None else seconds,
    )
    start = time.perf_counter()
    history = trainer.fit(
        batches(images, y_train, name, shuffle=True), epochs=fixed_epochs or MAX_EPOCHS
    )
    train_seconds = time.perf_counter() - start
    seen = sum(row["images_per_s"] * row["seconds"] for row in history)  # images trained on
    test = trainer.evaluate(batches(adapt_images(x_test, name, size), y_test, name, shuffle=False))
    return {
        "model": name,
        "input": f"1×{size}×{size}",
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "forward_mflops_per_image": flops / 1e6,
        "hyper": {k: hyper[k] for k in ("batch_size", "lr", "label_smoothing", "flip")},
        "train_images": round(seen),
        "epochs": seen / len(images),
        "train_seconds": train_seconds,
        "train_images_per_s": seen / sum(row["seconds"] for row in history),
        "test_accuracy": test["accuracy"],
        "history": history,
    }


# ---- report -----------------------------------------------------------------------------------------
def markdown(rows: list[dict], seconds: float, epochs: int | None = None) -> str:
    budget = f"{epochs} epochs" if epochs else f"Budget {seconds:g} s of training"
    lines = [
        f"{budget} per model; {cpu_line()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}.",
        "",
        "| model | input | parameters | forward MFLOPs/image | epochs | train s | train images/s | test accuracy |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['input']} | {r['parameters']:,} | {r['forward_mflops_per_image']:,.1f} "
            f"| {r['epochs']:.2f} | {r['train_seconds']:.0f} | {r['train_images_per_s']:,.0f} "
            f"| {100 * r['test_accuracy']:.2f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training budget per model")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--epochs", type=int, help="train exactly this many epochs instead of a time budget"
    )
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args()

    data = load_fashion_mnist()
    rows = []
    for name in args.models:
        row = run_model(name, args.seconds, data, args.epochs)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(markdown(rows, args.seconds, args.epochs))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"seconds": args.seconds, "hyper": HYPER, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
