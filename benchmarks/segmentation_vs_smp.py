"""cnnkit's segmentation vs segmentation_models_pytorch's U-Net on the Fashion-MNIST scenes, same
budget (issue 13).

    python benchmarks/segmentation_vs_smp.py --budget 30m --threads 2 --out benchmarks/out/seg

What it does, in order, on one machine, one thing at a time (never two trainings at once):

1. **cnnkit**: ``cnnkit train --task segment --data scenes ... --time-budget B`` (``--model``,
   default ``unet``; ``--model-option`` and ``--cnnkit-arg`` pass more), its defaults otherwise,
   on the CPU. The scenes: ``--n-train`` 5000, ``--n-valid`` 500, ``--n-test`` 1000,
   ``--canvas`` 128, up to ``--max-objects`` 6, ``--seed`` 0; semantic masks, 11 classes (0
   background). ``--cnnkit-run DIR`` skips this step and uses a finished run instead: its model
   and scenes options, read from its ``config.json``, replace ``--model``, ``--model-option``,
   ``--n-*``, ``--canvas``, ``--max-objects`` and ``--seed``; its training time is the sum of its
   epochs' seconds.
2. **segmentation_models_pytorch**: ``smp.Unet(encoder_name="resnet18", encoder_weights=None,
   in_channels=1, classes=11)`` trained by a plain PyTorch loop on the same training scenes
   (``cnnkit.data.make_scenes`` with the same arguments makes the same scenes): Adam
   (``--smp-lr`` 1e-3), pixel cross-entropy, batches of ``--smp-batch-size`` 32 in a seeded
   random order, each image normalized by the training split's mean and std as cnnkit does, no
   augmentation (cnnkit's default has none either; ``--smp-flip`` mirrors a random half of each
   batch, images and masks, as cnnkit's ``--flip`` does), until B has passed (checked after every
   step); no validation, the final weights are the model. Both train with ``--threads``
   intra-op threads.
3. **Scores**: both models label the same ``--n-test`` test scenes (argmax of the logits) and
   ``cnnkit.metrics.mean_iou`` scores them against the scenes' semantic masks (Keras ``MeanIoU``:
   one confusion matrix over every test pixel); pixel accuracy too.
4. **Speed**: CPU images/s at batch 1 and 32, from a uint8 batch to label maps (normalize, model,
   argmax: cnnkit's ``task.decode``; cnnkit's model as its ``segment`` command loads it, BatchNorm
   folded and channels-last; the peer's as it comes), interleaved round after round in one process
   (``--rounds``), medians reported.

segmentation_models_pytorch runs in its own virtual environment (``peers.py``: it sees cnnkit's
torch, and adds the pinned packages below); with ``encoder_weights=None`` nothing is downloaded,
and the steps in that environment refuse every connection (``peers.forbid_network``). Run it
alone on the machine. Output: a markdown table, the CPU's model name and
flags, and ``--out/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from peers import (
    budget_seconds,
    child_environment,
    cpu_description,
    forbid_network,
    interleaved_speed,
    peer_python,
    run,
)

#: the peer environment: segmentation_models_pytorch and what it imports (found by trying);
#: torch, torchvision, NumPy, Pillow, safetensors, tqdm come from cnnkit's environment
SMP_PINS = (
    "segmentation-models-pytorch==0.6.0",
    "timm==1.0.31",
    "huggingface-hub==2.4.0",
)
BATCHES = (1, 32)
NUM_CLASSES = 11  # background + the 10 Fashion-MNIST classes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/segmentation_vs_smp"))
    p.add_argument(
        "--budget", default="30m", help="training wall-clock budget each (300, 90s, 30m)"
    )
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads")
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--n-valid", type=int, default=500)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--canvas", type=int, default=128)
    p.add_argument("--max-objects", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="unet", help="cnnkit's registered segmentation model")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--cnnkit-arg", action="append", default=[], metavar="ARG",
        help="one more argument for `cnnkit train` (repeat: --cnnkit-arg=--flip)",
    )  # fmt: skip
    p.add_argument(
        "--cnnkit-run", type=Path, default=None, metavar="DIR",
        help="a finished `cnnkit train --task segment --data scenes` run to compare instead of "
        "training one (its scenes options replace --n-*, --canvas, --max-objects, --seed)",
    )  # fmt: skip
    p.add_argument(
        "--smp-flip", action="store_true", help="mirror a random half of each peer batch"
    )
    p.add_argument("--smp-batch-size", type=int, default=32)
    p.add_argument("--smp-lr", type=float, default=1e-3)
    p.add_argument("--rounds", type=int, default=5, help="interleaved speed rounds")
    p.add_argument(
        "--speed-images", type=int, default=64, help="images timed per setting per round"
    )
    p.add_argument(
        "--stage", choices=("main", "smp-train", "measure"), default="main", help=argparse.SUPPRESS
    )
    return p.parse_args(argv)


def smp_unet() -> Any:
    import segmentation_models_pytorch as smp

    return smp.Unet(
        encoder_name="resnet18", encoder_weights=None, in_channels=1, classes=NUM_CLASSES
    )


# ---------------------------------------------------------------- stage: main (cnnkit's venv)
def main(args: argparse.Namespace) -> None:
    import cnnkit
    from cnnkit.io import atomic_write_bytes

    budget = budget_seconds(args.budget)
    out = args.out
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: exists and is not empty; expected a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    python = peer_python("smp", SMP_PINS)
    env = child_environment(args.threads)
    reused = args.cnnkit_run is not None
    # 1. cnnkit: a new run, or the finished one linked as out/cnnkit
    if reused:
        command = scenes_from_run(args)
        (out / "cnnkit").symlink_to(args.cnnkit_run.resolve(), target_is_directory=True)
        history = (out / "cnnkit" / "metrics.jsonl").read_text().splitlines()
        cnnkit_wall = sum(json.loads(line).get("seconds", 0.0) for line in history)
    else:
        command = cnnkit_command(args, budget, out / "cnnkit")
        cnnkit_wall = run(command, env, out / "cnnkit-train.log")
    counts = {"train": args.n_train, "valid": args.n_valid, "test": args.n_test}

    # 2. segmentation_models_pytorch, after cnnkit has finished
    forward = [
        "--out", out, "--budget", args.budget, "--threads", args.threads,
        "--n-train", args.n_train, "--n-test", args.n_test, "--canvas", args.canvas,
        "--max-objects", args.max_objects, "--seed", args.seed,
        "--smp-batch-size", args.smp_batch_size, "--smp-lr", args.smp_lr,
        "--rounds", args.rounds, "--speed-images", args.speed_images,
        *(["--smp-flip"] if args.smp_flip else []),
    ]  # fmt: skip
    smp_wall = run([python, __file__, *forward, "--stage", "smp-train"], env, out / "smp-train.log")
    # 3, 4. scores and speed of both, in the peer environment (it sees cnnkit too)
    run([python, __file__, *forward, "--stage", "measure"], env, out / "measure.log")

    smp_train = json.loads((out / "smp-train.json").read_text())
    measured = json.loads((out / "measure.json").read_text())
    results = {
        "benchmark": "segmentation_vs_smp",
        "budget_s": budget,
        "threads": args.threads,
        "cpu": cpu_description(),
        "python": sys.version.split()[0],
        "seed": args.seed,
        "cnnkit_version": cnnkit.__version__,
        "peer_pins": list(SMP_PINS),
        "peer_versions": measured["versions"],
        "scenes": {**counts, "canvas": args.canvas, "max_objects": args.max_objects},
        "cnnkit": {
            "model": args.model,
            "model_options": args.model_option,
            "extra_args": args.cnnkit_arg,
            "command": [str(part) for part in command],
            "run": str(args.cnnkit_run.resolve()) if reused else None,
            "epochs": epochs_trained(out / "cnnkit"),
            "train_wall_s": cnnkit_wall,
            # the run's own test report, on the same test scenes (a cross-check of the scores)
            "run_test_metrics": json.loads((out / "cnnkit" / "test_metrics.json").read_text()),
            **measured["cnnkit"],
        },
        "smp": {
            "model": 'smp.Unet("resnet18", encoder_weights=None)',
            "flip": args.smp_flip,
            **smp_train,
            "train_wall_s": smp_wall,
            **measured["smp"],
        },
    }
    atomic_write_bytes(out / "results.json", (json.dumps(results, indent=1) + "\n").encode())
    print_table(results)
    print(f"\nresults in {out / 'results.json'}")


def print_table(results: dict[str, Any]) -> None:
    budget = results["budget_s"]
    print(
        f"\nCPU: {results['cpu']['model_name']}, {results['threads']} threads, torch from "
        f"cnnkit's environment, peers {', '.join(results['peer_pins'])}\n"
    )
    print(
        "| model | mIoU | pixel accuracy | images/s, batch 1 | images/s, batch 32 | budget "
        "| epochs | training wall-clock |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    options = ", ".join(results["cnnkit"]["model_options"])
    rows = (
        (f"cnnkit `{results['cnnkit']['model']}`" + (f" ({options})" if options else ""),
         results["cnnkit"]),
        (f"segmentation_models_pytorch `{results['smp']['model']}`", results["smp"]),
    )  # fmt: skip
    for name, r in rows:
        speed = r["images_per_s"]
        epochs = r["epochs"] if isinstance(r["epochs"], int) else f"{r['epochs']:.1f}"
        print(
            f"| {name} | {r['mean_iou']:.4f} | {r['pixel_accuracy']:.4f} "
            f"| {speed['1']['median']:.1f} | {speed['32']['median']:.1f} | {budget:g} s "
            f"| {epochs} | {r['train_wall_s']:.0f} s |"
        )
    own = results["cnnkit"]["run_test_metrics"]
    print(
        f"\n(cnnkit's run reported mIoU {own['test_mean_iou']:.4f} on the same test scenes in its "
        "own test report)"
    )
    print(f"\nlscpu model name: {results['cpu']['model_name']}")
    print(f"lscpu flags: {results['cpu']['flags']}")


def cnnkit_command(args: argparse.Namespace, budget: float, run_dir: Path) -> list[Any]:
    """The ``cnnkit train`` command of step 1."""
    command: list[Any] = [
        sys.executable, "-m", "cnnkit", "train", "--task", "segment", "--data", "scenes",
        "--model", args.model, "--time-budget", f"{budget:g}", "--epochs", "100000",
        "--device", "cpu", "--seed", args.seed, "--out", run_dir, "--no-progress",
    ]  # fmt: skip
    options = [f"n_{split}={getattr(args, f'n_{split}')}" for split in ("train", "valid", "test")]
    options += [f"canvas={args.canvas}", f"max_objects={args.max_objects}", f"seed={args.seed}"]
    for option in options:
        command += ["--data-option", option]
    for option in args.model_option:
        command += ["--model-option", option]
    return command + args.cnnkit_arg


def epochs_trained(run: Path) -> float:
    """Epochs a run trained, fractions included (its last ``steps.jsonl`` row; a time budget
    stops inside an epoch), else its ``metrics.jsonl`` rows."""
    steps = run / "steps.jsonl"
    if steps.is_file() and (rows := steps.read_text().splitlines()):
        return float(json.loads(rows[-1])["epoch"])
    return float(len((run / "metrics.jsonl").read_text().splitlines()))


def scenes_from_run(args: argparse.Namespace) -> list[str]:
    """Take the model and scenes options of the finished run ``args.cnnkit_run``; its command."""
    config = json.loads((args.cnnkit_run / "config.json").read_text())
    source = config["data"].get("source") or {}
    if config["data"]["name"] != "scenes" or source.get("task") != "segment":
        raise SystemExit(
            f"{args.cnnkit_run / 'config.json'}: data {config['data']['name']!r}, task "
            f"{source.get('task')!r}; expected a `--task segment --data scenes` run"
        )
    options = source.get("options", {})
    for split in ("train", "valid", "test"):
        key = f"n_{split}"
        setattr(args, key, int(options.get(key, getattr(args, key))))
    args.canvas = int(options.get("canvas", args.canvas))
    args.max_objects = int(options.get("max_objects", args.max_objects))
    args.seed = int(options.get("seed", args.seed))
    args.model = config["model"]["name"]
    args.model_option = [f"{k}={v}" for k, v in config["model"].get("options", {}).items()]
    return list(config.get("command", []))


# ---------------------------------------------------------------- stage: smp-train (peer venv)
def smp_train(args: argparse.Namespace) -> None:
    forbid_network()
    import segmentation_models_pytorch
    import torch
    import torch.nn.functional as F

    from cnnkit.data.datasets import channel_stats
    from cnnkit.data.scenes import make_scenes
    from cnnkit.io import atomic_write, atomic_write_bytes

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    scenes = make_scenes(
        args.n_train, "train", args.seed, canvas=args.canvas, max_objects=args.max_objects
    )
    images, masks = scenes.images, scenes.semantic.long()
    mean, std = channel_stats(images)  # as cnnkit's --data scenes normalizes
    model = smp_unet().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.smp_lr)
    generator = torch.Generator().manual_seed(args.seed)
    budget = budget_seconds(args.budget)
    steps, seen, loss = 0, 0, torch.tensor(float("nan"))
    start = time.perf_counter()
    while time.perf_counter() - start < budget:
        order = torch.randperm(len(images), generator=generator)
        for batch in order.split(args.smp_batch_size):
            x = (images[batch].float() / 255 - mean[0]) / std[0]
            y = masks[batch]
            if args.smp_flip:  # a random half of the batch mirrored, masks with their images
                mirror = torch.rand(len(batch), generator=generator) < 0.5
                x = torch.where(mirror.view(-1, 1, 1, 1), x.flip(3), x)
                y = torch.where(mirror.view(-1, 1, 1), y.flip(2), y)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps, seen = steps + 1, seen + len(batch)
            if time.perf_counter() - start >= budget:
                break
    seconds = time.perf_counter() - start
    atomic_write(args.out / "smp.pt", lambda tmp: torch.save(model.state_dict(), tmp))
    result = {
        "smp_version": segmentation_models_pytorch.__version__,
        "epochs": seen / len(images),
        "steps": steps,
        "final_train_loss": float(loss.detach()),
        "train_loop_s": seconds,
        "mean": mean[0],
        "std": std[0],
    }
    atomic_write_bytes(args.out / "smp-train.json", (json.dumps(result, indent=1) + "\n").encode())


# ---------------------------------------------------------------- stage: measure (peer venv)
def measure(args: argparse.Namespace) -> None:
    forbid_network()
    from importlib.metadata import version

    import torch

    from cnnkit.cli._common import load_run
    from cnnkit.data.scenes import make_scenes
    from cnnkit.io import atomic_write_bytes
    from cnnkit.metrics import confusion_matrix, mean_iou, pixel_accuracy

    torch.set_num_threads(args.threads)
    scenes = make_scenes(
        args.n_test, "test", args.seed, canvas=args.canvas, max_objects=args.max_objects
    )
    images, target = scenes.images, scenes.semantic.long()
    _, _, model, task, meta = load_run(args.out / "cnnkit", fuse=True)
    trained = json.loads((args.out / "smp-train.json").read_text())
    unet = smp_unet()
    unet.load_state_dict(torch.load(args.out / "smp.pt", weights_only=True))
    unet.eval()

    def cnnkit_call(x: torch.Tensor) -> torch.Tensor:
        return task.decode(model(meta.preprocess(x)))

    def smp_call(x: torch.Tensor) -> torch.Tensor:
        return unet((x.float() / 255 - trained["mean"]) / trained["std"]).argmax(1)

    calls = {"cnnkit": cnnkit_call, "smp": smp_call}
    result: dict[str, Any] = {
        "versions": {pin.split("==")[0]: version(pin.split("==")[0]) for pin in SMP_PINS},
        "torch_threads": torch.get_num_threads(),
    }
    with torch.inference_mode():
        for name, call in calls.items():
            labels = torch.cat([call(x) for x in images.split(100)])
            result[name] = {
                "mean_iou": float(mean_iou(labels, target, NUM_CLASSES)),
                "pixel_accuracy": float(
                    pixel_accuracy(confusion_matrix(labels, target, NUM_CLASSES))
                ),
            }
        speed = interleaved_speed(calls, images, BATCHES, args.rounds, args.speed_images)
    for name in calls:
        result[name]["images_per_s"] = speed[name]
    atomic_write_bytes(args.out / "measure.json", (json.dumps(result, indent=1) + "\n").encode())


if __name__ == "__main__":
    arguments = parse_args()
    arguments.out = arguments.out.resolve()
    {"main": main, "smp-train": smp_train, "measure": measure}[arguments.stage](arguments)
