"""cnnkit's detector vs Ultralytics YOLOv8n on the Fashion-MNIST scenes, same budget (issue 12).

    python benchmarks/detection_vs_ultralytics.py --budget 30m --threads 2 --out benchmarks/out/det

What it does, in order, on one machine, one thing at a time (never two trainings at once):

1. **Scenes**: ``cnnkit data make-scenes --format yolo`` writes the train, valid and test splits
   (``--n-train`` 5000, ``--n-valid`` 500, ``--n-test`` 1000, ``--canvas`` 128, up to
   ``--max-objects`` 6, ``--seed`` 0) as greyscale PNGs with YOLO labels; ``data.yaml`` for
   Ultralytics names the three folders. ``--data scenes`` with the same options makes the very
   same scenes in memory (same seeded generator; step 4 checks the test images pixel for pixel).
2. **cnnkit**: ``cnnkit train --task detect --data scenes ... --time-budget B`` (``--model``,
   ``--model-option``; default the YOLO-style ``yolo`` on ``resnet18_narrow``'s stride-8 stage),
   its own defaults otherwise (``--cnnkit-arg`` passes more), on the CPU.
3. **Ultralytics**: ``YOLO("yolov8n.yaml")`` (random weights: no download) trained with
   ``time=B`` hours (``epochs`` left at its default 100, which only guides the choice of
   ``optimizer="auto"`` and the first epoch's plan), ``imgsz`` the canvas, batch 16 (Ultralytics' default), ``workers=0`` (the
   data is loaded in the training process, as cnnkit's in-memory scenes are: no extra cores),
   ``cache="ram"``, ``plots=False``, AMP off (it is a CUDA-only check anyway), its defaults
   otherwise. Ultralytics checks ``time`` after every optimizer step and each epoch, and
   re-plans its epochs and schedule to end on time; its evaluation of ``best.pt`` after training
   is not counted in ``time``, as cnnkit's test report is not counted in ``--time-budget``. Both
   train with ``--threads`` intra-op threads (Ultralytics would otherwise set min(8, cores - 1)).
4. **Scores**: both ``best`` checkpoints (each library's choice on the valid split) are applied
   to the same ``--n-test`` test scenes and scored by ``cnnkit.detection.mean_average_precision``
   (pycocotools' COCO summary) against the scenes' exact boxes. YOLOv8n predicts on the
   exported PNGs with ``conf=0.001``, ``max_det=100`` (the low threshold COCO evaluation needs,
   as ``yolo val`` uses); cnnkit decodes with its task's defaults (score >= 0.01, 100 per image).
   Cross-checks, each library scoring itself by its own method, are recorded beside: cnnkit's
   run's test report and Ultralytics' ``val`` on the test split.
5. **Speed**: CPU images/s at batch 1 and 32, from a uint8 batch to per-image boxes after NMS,
   each library's default inference (cnnkit: normalize, model, ``task.decode``; Ultralytics:
   ``model.predict`` on the float tensor, conf 0.25, its fused model), interleaved round after
   round in one process (``--rounds``), medians reported.

Everything Ultralytics needs runs in its own virtual environment (``peers.py``: it sees cnnkit's
torch, and adds the pinned packages below), with ``YOLO_OFFLINE=1`` and its settings file inside
``--out`` (sync and every logger off): nothing is downloaded, no fonts (no plots), and the steps
in that environment refuse every connection (``peers.forbid_network``), so an attempt would stop
the run rather than pass unnoticed. Run it alone on the machine. Output: a markdown table, the
CPU's model name and flags, and ``--out/results.json``.
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

#: the peer environment: Ultralytics and the light packages it imports (found by trying); torch,
#: torchvision, NumPy, Pillow, matplotlib, PyYAML come from cnnkit's environment
ULTRALYTICS_PINS = (
    "ultralytics==8.4.190",
    "ultralytics-thop==2.2.3",
    "opencv-python-headless==5.1.0.95",
    "polars==2.1.0",
    "polars-runtime-32==2.1.0",
    "psutil==7.2.2",
)
SPLITS = ("train", "valid", "test")
BATCHES = (1, 32)
#: Ultralytics' settings that reach the network (events, loggers); all off
OFFLINE_SETTINGS = {
    "sync": False, "clearml": False, "comet": False, "dvc": False, "mlflow": False,
    "raytune": False, "tensorboard": False, "wandb": False, "vscode_msg": False,
    "openvino_msg": False,
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/detection_vs_ultralytics"))
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
    p.add_argument("--model", default="yolo", help="cnnkit's registered detection model")
    p.add_argument(
        "--model-option", action="append", metavar="KEY=VALUE",
        help="cnnkit builder option (default: backbone=resnet18_narrow feature_index=-3)",
    )  # fmt: skip
    p.add_argument(
        "--cnnkit-arg", action="append", default=[], metavar="ARG",
        help="one more argument for `cnnkit train` (repeat: --cnnkit-arg=--flip)",
    )  # fmt: skip
    p.add_argument("--yolo-model", default="yolov8n.yaml", help="Ultralytics model YAML")
    p.add_argument("--yolo-batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5, help="interleaved speed rounds")
    p.add_argument(
        "--speed-images", type=int, default=64, help="images timed per setting per round"
    )
    p.add_argument(
        "--remeasure", action="store_true",
        help="keep both trained models in --out and redo only the scores and speeds (steps 4, 5: "
        "after a change to cnnkit's inference), updating results.json",
    )  # fmt: skip
    p.add_argument(
        "--stage", choices=("main", "yolo-train", "measure"), default="main", help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    if args.model_option is None:
        args.model_option = ["backbone=resnet18_narrow", "feature_index=-3"]
    return args


def yolo_detections(xyxy: Any, conf: Any, cls: Any) -> dict[str, Any]:
    """One Ultralytics ``Results.boxes`` (``xyxy`` pixels of the original image, ``conf``,
    ``cls`` as float class ids) → cnnkit's per-image detections: ``boxes`` float32 (M, 4) xyxy
    pixels, ``scores`` float32 (M,), ``labels`` int64 (M,), by descending score (stable)."""
    import torch

    xyxy, conf, cls = (torch.as_tensor(v).detach().cpu() for v in (xyxy, conf, cls))
    if xyxy.ndim != 2 or xyxy.shape[1] != 4 or not len(xyxy) == len(conf) == len(cls):
        raise ValueError(
            f"Ultralytics boxes: xyxy {tuple(xyxy.shape)}, conf {tuple(conf.shape)}, "
            f"cls {tuple(cls.shape)}; expected (M, 4), (M,), (M,)"
        )
    if not torch.equal(cls, cls.round()):
        raise ValueError(f"Ultralytics boxes: class ids {cls.tolist()} are not whole numbers")
    order = torch.argsort(conf, descending=True, stable=True)
    return {
        "boxes": xyxy[order].float(),
        "scores": conf[order].float(),
        "labels": cls[order].long(),
    }


# ---------------------------------------------------------------- stage: main (cnnkit's venv)
def peer_stage_arguments(args: argparse.Namespace, out: Path) -> tuple[list[Any], dict[str, str]]:
    """The arguments and environment of the stages that run in the peer environment."""
    forward = [
        "--out", out, "--budget", args.budget, "--threads", args.threads,
        "--n-test", args.n_test, "--canvas", args.canvas, "--max-objects", args.max_objects,
        "--seed", args.seed, "--yolo-model", args.yolo_model, "--yolo-batch", args.yolo_batch,
        "--rounds", args.rounds, "--speed-images", args.speed_images,
    ]  # fmt: skip
    peer_env = child_environment(
        args.threads, {"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(out / "ultralytics-config")}
    )
    return forward, peer_env


def remeasure(args: argparse.Namespace, out: Path) -> None:
    """Steps 4 and 5 again on the trained models of an earlier run in ``out``; its
    ``results.json`` keeps the training figures and gets the new scores, speeds and CPU."""
    from cnnkit.io import atomic_write_bytes

    if not (out / "results.json").is_file():
        raise SystemExit(f"{out}: holds no results.json; expected the folder of a finished run")
    forward, peer_env = peer_stage_arguments(args, out)
    python = peer_python("ultralytics", ULTRALYTICS_PINS)
    run([python, __file__, *forward, "--stage", "measure"], peer_env, out / "measure.log")
    results = json.loads((out / "results.json").read_text())
    measured = json.loads((out / "measure.json").read_text())
    results["cpu"], results["peer_versions"] = cpu_description(), measured["versions"]
    results["remeasured"] = time.strftime("%Y-%m-%d %H:%M:%S")
    for name in ("cnnkit", "ultralytics"):
        results[name].update(measured[name])
    atomic_write_bytes(out / "results.json", (json.dumps(results, indent=1) + "\n").encode())
    print_table(results)
    print(f"\nresults in {out / 'results.json'}")


def main(args: argparse.Namespace) -> None:
    import yaml

    import cnnkit
    from cnnkit.io import atomic_write_bytes

    budget = budget_seconds(args.budget)
    out = args.out.resolve()
    if args.remeasure:
        remeasure(args, out)
        return
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: exists and is not empty; expected a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    python = peer_python("ultralytics", ULTRALYTICS_PINS)
    env = child_environment(args.threads)
    cli = [sys.executable, "-m", "cnnkit"]
    counts = {"train": args.n_train, "valid": args.n_valid, "test": args.n_test}

    # 1. the scenes, exported for Ultralytics
    for split in SPLITS:
        run(
            [*cli, "data", "make-scenes", "--out", out / "scenes" / split, "--n", counts[split],
             "--split", split, "--format", "yolo", "--seed", args.seed, "--canvas", args.canvas,
             "--max-objects", args.max_objects],
            env, out / f"make-scenes-{split}.log",
        )  # fmt: skip
    exported = yaml.safe_load((out / "scenes" / "train" / "data.yaml").read_text())
    data_yaml = {
        "path": str(out / "scenes"),
        **{split: f"{split}/images" for split in ("train", "test")},
        "val": "valid/images",
        "names": exported["names"],
    }
    atomic_write_bytes(out / "data.yaml", yaml.safe_dump(data_yaml, sort_keys=False).encode())

    # 2. cnnkit
    options = [f"{k}={counts[s]}" for k, s in (("n_train", "train"), ("n_valid", "valid"),
                                               ("n_test", "test"))]  # fmt: skip
    options += [f"canvas={args.canvas}", f"max_objects={args.max_objects}", f"seed={args.seed}"]
    command: list[Any] = [
        *cli, "train", "--task", "detect", "--data", "scenes", "--model", args.model,
        "--time-budget", f"{budget:g}", "--epochs", "100000", "--device", "cpu",
        "--seed", str(args.seed), "--out", out / "cnnkit", "--no-progress",
    ]  # fmt: skip
    for option in options:
        command += ["--data-option", option]
    for option in args.model_option:
        command += ["--model-option", option]
    command += args.cnnkit_arg
    cnnkit_wall = run(command, env, out / "cnnkit-train.log")

    # 3. Ultralytics, after cnnkit has finished
    forward, peer_env = peer_stage_arguments(args, out)
    yolo_wall = run(
        [python, __file__, *forward, "--stage", "yolo-train"], peer_env, out / "yolo-train.log"
    )
    # 4, 5. scores and speed of both, in the peer environment (it sees cnnkit too)
    run([python, __file__, *forward, "--stage", "measure"], peer_env, out / "measure.log")

    yolo_train = json.loads((out / "yolo-train.json").read_text())
    measured = json.loads((out / "measure.json").read_text())
    cnnkit_epochs = len((out / "cnnkit" / "metrics.jsonl").read_text().splitlines())
    cpu = cpu_description()
    results = {
        "benchmark": "detection_vs_ultralytics",
        "budget_s": budget,
        "threads": args.threads,
        "cpu": cpu,
        "python": sys.version.split()[0],
        "seed": args.seed,
        "cnnkit_version": cnnkit.__version__,
        "peer_pins": list(ULTRALYTICS_PINS),
        "peer_versions": measured["versions"],
        "scenes": {**counts, "canvas": args.canvas, "max_objects": args.max_objects},
        "cnnkit": {
            "model": args.model,
            "model_options": args.model_option,
            "extra_args": args.cnnkit_arg,
            "epochs": cnnkit_epochs,
            "train_wall_s": cnnkit_wall,
            # the run's own test report, on the same test scenes (a cross-check of the scores)
            "run_test_metrics": json.loads((out / "cnnkit" / "test_metrics.json").read_text()),
            **measured["cnnkit"],
        },
        "ultralytics": {
            "model": args.yolo_model,
            "batch": args.yolo_batch,
            **yolo_train,
            "train_wall_s": yolo_wall,
            **measured["ultralytics"],
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
        "| detector | mAP@[.5:.95] | mAP@0.5 | images/s, batch 1 | images/s, batch 32 "
        "| budget | epochs | training wall-clock |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = (
        (f"cnnkit `{results['cnnkit']['model']}` "
         f"({', '.join(results['cnnkit']['model_options'])})", results["cnnkit"]),
        (f"Ultralytics YOLOv8n (`{results['ultralytics']['model']}`)", results["ultralytics"]),
    )  # fmt: skip
    for name, r in rows:
        speed = r["images_per_s"]
        print(
            f"| {name} | {r['coco']['map']:.4f} | {r['coco']['map_50']:.4f} "
            f"| {speed['1']['median']:.1f} | {speed['32']['median']:.1f} | {budget:g} s "
            f"| {r['epochs']} | {r['train_wall_s']:.0f} s |"
        )
    own = results["cnnkit"]["run_test_metrics"]
    theirs = results["ultralytics"]["own_val"]
    print(
        f"\nCross-checks on the same test scenes, mAP@[.5:.95] / mAP@0.5: cnnkit's own test report "
        f"{own['test_map']:.4f} / {own['test_map_50']:.4f}; Ultralytics' own `val` "
        f"{theirs['map']:.4f} / {theirs['map_50']:.4f} (multi-label, as cnnkit's default)"
    )
    if "one_label" in results["cnnkit"]:
        single = results["cnnkit"]["one_label"]
        print(
            f"cnnkit decoding one label per box, as Ultralytics' predict above: "
            f"{single['map']:.4f} / {single['map_50']:.4f}"
        )
    print(f"\nlscpu model name: {results['cpu']['model_name']}")
    print(f"lscpu flags: {results['cpu']['flags']}")


# ---------------------------------------------------------------- stage: yolo-train (peer venv)
def yolo_train(args: argparse.Namespace) -> None:
    forbid_network()
    import torch
    import ultralytics
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics import YOLO, settings

    from cnnkit.io import atomic_write_bytes

    settings.update(OFFLINE_SETTINGS)
    # select_device() sets torch's threads to this on the CPU: min(8, cores - 1) by default
    torch_utils.NUM_THREADS = args.threads  # type: ignore[attr-defined]
    budget = budget_seconds(args.budget)
    model = YOLO(args.yolo_model)
    start = time.perf_counter()
    model.train(
        data=str(args.out / "data.yaml"), time=budget / 3600, imgsz=args.canvas,
        batch=args.yolo_batch, device="cpu", workers=0, cache="ram", plots=False, amp=False,
        seed=args.seed, project=str(args.out / "ultralytics"), name="train", exist_ok=True,
        verbose=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    trainer = model.trainer
    assert trainer is not None
    result = {
        "ultralytics_version": ultralytics.__version__,
        "epochs": int(trainer.epoch - trainer.start_epoch + 1),
        "train_call_s": seconds,
        "best": str(trainer.best),
        "optimizer": type(trainer.optimizer).__name__,
        "torch_threads": torch.get_num_threads(),
    }
    atomic_write_bytes(args.out / "yolo-train.json", (json.dumps(result, indent=1) + "\n").encode())


# ---------------------------------------------------------------- stage: measure (peer venv)
def measure(args: argparse.Namespace) -> None:
    forbid_network()
    from importlib.metadata import version

    import numpy as np
    import torch
    from PIL import Image
    from ultralytics import YOLO, settings

    from cnnkit.cli._common import load_run
    from cnnkit.data.scenes import make_scenes
    from cnnkit.detection import mean_average_precision
    from cnnkit.io import atomic_write_bytes

    settings.update(OFFLINE_SETTINGS)
    torch.set_num_threads(args.threads)
    scenes = make_scenes(
        args.n_test, "test", args.seed, canvas=args.canvas, max_objects=args.max_objects
    )
    folder = args.out / "scenes" / "test" / "images"
    paths = [folder / scenes.file_name(i) for i in range(len(scenes))]
    for i, path in enumerate(paths):  # the exported scenes are the ones made in memory
        if not np.array_equal(np.asarray(Image.open(path)), scenes.images[i, 0].numpy()):
            raise SystemExit(f"{path}: differs from test scene {i} made in memory")
    targets = [{"boxes": b, "labels": y} for b, y in zip(scenes.boxes, scenes.labels, strict=True)]

    _, _, model, task, meta = load_run(args.out / "cnnkit", fuse=True)  # as `cnnkit detect`
    names = list(meta.class_names)
    yolo = YOLO(json.loads((args.out / "yolo-train.json").read_text())["best"])

    ours: list[dict[str, torch.Tensor]] = []
    ours_one_label: list[dict[str, torch.Tensor]] = []  # as Ultralytics' predict decodes
    with torch.inference_mode():
        for start in range(0, len(scenes), 100):
            grid = model(meta.preprocess(scenes.images[start : start + 100]))
            ours += task.decode(grid)
            ours_one_label += task.decode(grid, multi_label=False)  # type: ignore[call-arg]
    theirs = [
        yolo_detections(r.boxes.xyxy, r.boxes.conf, r.boxes.cls)
        for r in yolo.predict(
            [str(p) for p in paths], imgsz=args.canvas, conf=0.001, max_det=100, device="cpu",
            batch=32, stream=True, verbose=False,
        )
    ]  # fmt: skip

    def cnnkit_call(x: torch.Tensor) -> object:
        return task.decode(model(meta.preprocess(x)))

    def yolo_call(x: torch.Tensor) -> object:
        rgb = x.expand(-1, 3, -1, -1).float().div(255)  # Ultralytics takes RGB floats in [0, 1]
        return yolo.predict(rgb, imgsz=args.canvas, device="cpu", verbose=False)

    calls = {"cnnkit": cnnkit_call, "ultralytics": yolo_call}
    with torch.inference_mode():
        speed = interleaved_speed(calls, scenes.images, BATCHES, args.rounds, args.speed_images)
    result: dict[str, Any] = {
        "versions": {pin.split("==")[0]: version(pin.split("==")[0]) for pin in ULTRALYTICS_PINS},
        "torch_threads": torch.get_num_threads(),
    }
    for name, predictions in (("cnnkit", ours), ("ultralytics", theirs)):
        result[name] = {
            "coco": mean_average_precision(predictions, targets, class_names=names),
            "images_per_s": speed[name],
        }
    # Ultralytics' own evaluation of the same checkpoint on the same test split (its matching and
    # interpolation, not pycocotools'): a cross-check that the boxes were converted right
    own = yolo.val(
        data=str(args.out / "data.yaml"), split="test", imgsz=args.canvas, batch=32, conf=0.001,
        device="cpu", plots=False, verbose=False,
    ).box  # fmt: skip
    result["ultralytics"]["own_val"] = {"map": float(own.map), "map_50": float(own.map50)}
    one_label = mean_average_precision(ours_one_label, targets)
    result["cnnkit"]["one_label"] = {"map": one_label["map"], "map_50": one_label["map_50"]}
    atomic_write_bytes(args.out / "measure.json", (json.dumps(result, indent=1) + "\n").encode())


if __name__ == "__main__":
    arguments = parse_args()
    arguments.out = arguments.out.resolve()
    {"main": main, "yolo-train": yolo_train, "measure": measure}[arguments.stage](arguments)
