"""Time to accuracy on Fashion-MNIST (issue 15): cnnkit's speedrun, and the notes' model trained by
Keras 3 on TensorFlow and by cnnkit with identical settings, on one machine.

    python benchmarks/time_to_accuracy.py --threads 2 --out benchmarks/out/time_to_accuracy
    python benchmarks/time_to_accuracy.py --smoke      # tiny sizes: checks the plumbing only

What it does, in order, one training at a time (run it alone on the machine):

1. **The machine**: ``lscpu``'s model name and flags; the GFLOP/s of a 2048×2048 fp32 matmul (and
   bf16 where the CPU computes it natively, ``cnnkit.device.cpu_has_native_bf16``), measured at the
   start and the end, medians reported.
2. **The speedrun**: ``cnnkit speedrun fashion-mnist --target T --seed S`` for each target
   (``--targets``, default 0.94 0.95) and seed (``--seeds``, default 0 1 2), each its own process;
   ``--speedrun-args T=ARGS`` adds options to the runs of target T (a longer recipe for 95%, say).
   Per target: the median and spread of wall time, training time, epochs and test accuracy, and
   how many seeds met the target (``RUN/speedrun.json``).
3. **The notes' model, epoch by epoch, interleaved**: persistent worker processes, each waiting
   for the parent before every epoch, so the epochs of all of them alternate on the machine
   (load from elsewhere hits all alike):

   - ``keras-book``: the book's Fashion-MNIST CNN (Géron ch. 14) in Keras 3 on TensorFlow, as the
     book trains it: Nadam (Keras' defaults, lr 1e-3), batch 32, 10 epochs, shuffled; in a
     virtual environment this script creates (``peers.peer_python(..., isolated=True)``:
     TensorFlow is never a cnnkit dependency), no network (the worker refuses connections);
   - ``cnnkit-book``: the same model (``fashion_cnn``, dropout 0.5) and settings in cnnkit's
     ``Trainer``: NAdam lr 1e-3, constant rate, batch 32, 10 epochs, fp32 (and, where bf16 is
     native, ``cnnkit-book-bf16``); one deliberate difference: cnnkit initialises with He, Keras
     with Glorot (``models/fashion_cnn.py``);
   - ``cnnkit-best``: cnnkit's best recipe for that model (``cnnkit demo``'s: AdamW 2e-3 1cycle,
     batch 32, label smoothing 0.1, no dropout) over ``--best-epochs`` epochs.

   Both frameworks get the same images, scaled to [0, 1] and normalized by the training split's
   mean and std (the book standardizes per pixel; one value for all pixels here, as cnnkit does),
   ``--threads`` intra-op threads each. An epoch's seconds are training only: each worker scores
   the 10,000 test images after every epoch, outside the timing (measurement, not a decision).
   Reported: seconds per epoch (median over the epochs after the first, whose tracing and warm-up
   would skew it), test accuracy per epoch, the ratio Keras / cnnkit of seconds per epoch, and
   **time to 92%** (the book's result): the training seconds up to the first epoch whose test
   accuracy reaches 0.92 — for the speedrun its training time when its final accuracy does.
   ``--book-epochs N`` runs cnnkit-book for N epochs only (0: not at all; its per-epoch ratio to
   Keras is then left out), ``--best-epochs 0`` leaves cnnkit-best out, and ``--stop-at-92`` gives
   a run no epoch after the one that reached 92% (its time to 92% is known by then). Where Keras
   never reaches 92%, the time-to-92% ratios are lower bounds (Keras' training seconds so far).
   ``--from-results OUT/results.json`` writes the summary and ratios of a finished run again.
4. **Hardware use**: each run's training FLOPs per image (``torch.utils.flop_counter``, forward +
   backward, on cnnkit's model; Keras trains the same layers) times its images/s, as a share of
   the matmul GFLOP/s of the precision it used.

Output: a markdown summary on stdout and in ``--out/summary.md``, everything in
``--out/results.json``, each process's log beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from peers import child_environment, cpu_description, peer_python

#: the Keras environment: TensorFlow's CPU build and Keras 3, with their dependencies
KERAS_PINS = ("tensorflow-cpu==2.21.0", "keras==3.15.1")
BOOK_TARGET = 0.92  # the book's test accuracy for this model (Géron ch. 14: "about 92%")
TEST_BATCH = 500

#: the notes' model in cnnkit: the book's settings, and cnnkit's best recipe (cnnkit demo's)
RECIPES: dict[str, dict[str, Any]] = {
    "book": {
        "optimizer": "nadam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "constant",
        "batch_size": 32, "dropout": 0.5, "label_smoothing": 0.0,
    },
    "best": {
        "optimizer": "adamw", "lr": 2e-3, "weight_decay": None, "schedule": "onecycle",
        "batch_size": 32, "dropout": 0.0, "label_smoothing": 0.1,
    },
}  # fmt: skip

# The Keras worker, written next to the results and run by the Keras environment's Python. It
# follows the book's listing; it waits for "go" on stdin before each epoch and prints one JSON
# line after it.
KERAS_WORKER = r"""
import json, socket, sys, time

def refuse(*args, **kwargs):
    raise OSError(f"network access refused in a peer benchmark: {args[:2]}")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse

data_path, threads, epochs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
import keras
from functools import partial

keras.utils.set_random_seed(seed)
data = np.load(data_path)
mean, std = float(data["mean"]), float(data["std"])
def prepare(images):
    return ((images.astype("float32") / 255 - mean) / std)[..., np.newaxis]
x_train, y_train = prepare(data["train_x"]), data["train_y"].astype("int64")
x_test, y_test = prepare(data["test_x"]), data["test_y"].astype("int64")

DefaultConv2D = partial(keras.layers.Conv2D, kernel_size=3, activation="relu", padding="SAME")
model = keras.models.Sequential([
    keras.Input(shape=[28, 28, 1]),
    DefaultConv2D(filters=64, kernel_size=7),
    keras.layers.MaxPooling2D(pool_size=2),
    DefaultConv2D(filters=128),
    DefaultConv2D(filters=128),
    keras.layers.MaxPooling2D(pool_size=2),
    DefaultConv2D(filters=256),
    DefaultConv2D(filters=256),
    keras.layers.MaxPooling2D(pool_size=2),
    keras.layers.Flatten(),
    keras.layers.Dense(units=128, activation="relu"),
    keras.layers.Dropout(0.5),
    keras.layers.Dense(units=64, activation="relu"),
    keras.layers.Dropout(0.5),
    keras.layers.Dense(units=10, activation="softmax"),
])
model.compile(loss="sparse_categorical_crossentropy", optimizer="nadam", metrics=["accuracy"])

class Paced(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if sys.stdin.readline().strip() != "go":
            raise SystemExit(0)
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        start = time.perf_counter()
        _, accuracy = self.model.evaluate(x_test, y_test, batch_size=500, verbose=0)
        print(json.dumps({
            "epoch": epoch + 1, "seconds": seconds, "images": len(x_train),
            "loss": float(logs["loss"]), "accuracy": float(logs["accuracy"]),
            "test_accuracy": float(accuracy), "test_seconds": time.perf_counter() - start,
        }), flush=True)

print(json.dumps({"ready": True, "tensorflow": tf.__version__, "keras": keras.__version__,
                  "parameters": model.count_params()}), flush=True)
model.fit(x_train, y_train, batch_size=32, epochs=epochs, shuffle=True, verbose=0,
          callbacks=[Paced()])
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/time_to_accuracy"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--targets", type=float, nargs="+", default=[0.94, 0.95])
    p.add_argument(
        "--speedrun-args", action="append", default=[], metavar="T=ARGS",
        help="more cnnkit speedrun options for the runs of target T, e.g. '0.95=--epochs 30'",
    )  # fmt: skip
    p.add_argument(
        "--epochs", type=int, default=10, help="the book recipe's epochs (Keras, cnnkit)"
    )
    p.add_argument(
        "--book-epochs", type=int, default=None,
        help="cnnkit-book's epochs (default: --epochs; 0 leaves it out, its ratio to Keras too)",
    )  # fmt: skip
    p.add_argument(
        "--best-epochs", type=int, default=5, help="cnnkit's best recipe's epochs (0: left out)"
    )
    p.add_argument(
        "--stop-at-92", action="store_true",
        help="step 3: a run gets no epoch after the first whose test accuracy reaches 92%%",
    )  # fmt: skip
    p.add_argument("--no-speedrun", action="store_true", help="skip step 2")
    p.add_argument("--no-keras", action="store_true", help="leave Keras out of step 3")
    p.add_argument("--no-notes", action="store_true", help="skip step 3")
    p.add_argument(
        "--bf16", choices=["auto", "on", "off"], default="auto",
        help="cnnkit-book-bf16: where bf16 is native (auto), always, never",
    )  # fmt: skip
    p.add_argument("--train-limit", type=int, default=None, help="notes' model: first N images")
    p.add_argument("--test-limit", type=int, default=None, help="notes' model: first N test images")
    p.add_argument(
        "--from-results", type=Path, default=None, metavar="RESULTS_JSON",
        help="write the summary (and ratios) of an earlier run's results.json again, train nothing",
    )  # fmt: skip
    p.add_argument(
        "--smoke", action="store_true",
        help="tiny sizes (one seed, target 0.5, 256 images, 2 epochs): the plumbing, not a result",
    )  # fmt: skip
    # a worker process (internal): python time_to_accuracy.py --worker cnnkit ...
    p.add_argument("--worker", choices=["cnnkit"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--recipe", choices=sorted(RECIPES), default="book", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.book_epochs is None:
        args.book_epochs = args.epochs
    if args.smoke:
        args.seeds, args.targets = args.seeds[:1], [0.5]
        args.speedrun_args = [
            "0.5=--train-limit 256 --epochs 1 --batch-size 128 --model-option widths=[8,16,16]"
        ]
        args.epochs, args.best_epochs = 2, 2
        args.book_epochs = min(args.book_epochs, 2)
        args.train_limit, args.test_limit = args.train_limit or 256, args.test_limit or 500
    return args


# ---- the machine ----------------------------------------------------------------------------------
def matmul_gflops(dtype_name: str, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n×n matmul in ``dtype_name`` (fp32 or bf16), the best of three timings."""
    import torch

    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up: kernels are picked on the first call
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def train_flops_per_image(name: str, options: dict[str, Any], batch: int = 32) -> float:
    """Forward + backward FLOPs per image of one training step (``torch.utils.flop_counter``)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from cnnkit.models import create_model

    model = create_model(name, num_classes=10, in_channels=1, **options).train()
    x = torch.randn(batch, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward()
    return counter.get_total_flops() / batch


# ---- step 2: the speedrun ---------------------------------------------------------------------------
def extra_speedrun_args(specs: list[str]) -> dict[float, list[str]]:
    extra: dict[float, list[str]] = {}
    for spec in specs:
        target, sep, rest = spec.partition("=")
        if not sep:
            raise SystemExit(f"--speedrun-args: expected T=ARGS, got {spec!r}")
        extra[float(target)] = shlex.split(rest)
    return extra


def run_speedruns(args: argparse.Namespace) -> dict[str, Any]:
    extra = extra_speedrun_args(args.speedrun_args)
    env = child_environment(args.threads)
    results: dict[str, Any] = {}
    for target in args.targets:
        runs = []
        for seed in args.seeds:
            out = args.out / f"speedrun-{target:g}-seed{seed}"
            command = [
                sys.executable, "-m", "cnnkit", "speedrun", "fashion-mnist", "--target",
                str(target), "--seed", str(seed), "--out", str(out), "--overwrite",
                "--no-progress", *extra.get(target, []),
            ]  # fmt: skip
            print("$", " ".join(command[2:]), flush=True)
            start = time.perf_counter()
            with (args.out / f"speedrun-{target:g}-seed{seed}.log").open("w") as log:
                code = subprocess.call(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            process_seconds = time.perf_counter() - start
            if code:
                raise SystemExit(f"cnnkit speedrun exited with {code}; see {log.name}")
            report = json.loads((out / "speedrun.json").read_text())
            config = json.loads((out / "config.json").read_text())
            metrics = [
                json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            ]
            report["images_per_s"] = statistics.median(row["images_per_s"] for row in metrics)
            # the whole process, Python's start and imports included (wall_seconds is the command's)
            report["process_seconds"] = process_seconds
            # the book's 92%: the training time of a run whose final test accuracy reaches it
            reached = report["test_accuracy"] >= BOOK_TARGET
            report["seconds_to_92"] = report["train_seconds"] if reached else None
            report["model_options"] = config["model"]["options"]
            print(
                f"  seed {seed}: {report['test_accuracy']:.2%} in {report['wall_seconds']:.0f} s "
                f"wall, {report['epochs']} epochs", flush=True,
            )  # fmt: skip
            runs.append(report)
        results[f"{target:g}"] = {"target": target, "runs": runs, **_spread(runs)}
    return results


def _spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key in ("wall_seconds", "train_seconds", "epochs", "test_accuracy"):
        values = [run[key] for run in runs]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    summary["met"] = sum(run["target_met"] for run in runs)
    to_92 = [run["seconds_to_92"] for run in runs]
    summary["seconds_to_92"] = None if None in to_92 else statistics.median(to_92)
    return summary


# ---- step 3: the notes' model, interleaved epoch by epoch ------------------------------------------
class Worker:
    """A training process that waits for ``go`` before each epoch and answers one JSON line."""

    def __init__(self, name: str, command: list[Any], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [str(c) for c in command], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True,
        )  # fmt: skip
        self.rows: list[dict[str, Any]] = []
        self.info: dict[str, Any] = self._answer()

    def _answer(self) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        for line in stdout:
            if line.startswith("{"):
                return json.loads(line)
        code = self.process.wait()
        raise SystemExit(f"worker {self.name} exited with {code}; see {self.log.name}")

    def epoch(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        row = self._answer()
        self.rows.append(row)
        return row

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=120)
        self.log.close()


def write_keras_data(args: argparse.Namespace) -> Path:
    """The notes' split for the Keras worker: uint8 training and test images with labels, and the
    mean and std cnnkit normalizes with (``channel_stats`` of the training images)."""
    import numpy as np

    from cnnkit.data import load_fashion_mnist
    from cnnkit.data.datasets import channel_stats

    (xt, yt), _, (xs, ys) = load_fashion_mnist()
    xt, yt, xs, ys = xt[: args.train_limit], yt[: args.train_limit], xs[: args.test_limit], ys[: args.test_limit]  # fmt: skip
    (mean,), (std,) = channel_stats(xt.unsqueeze(1))
    path = args.out / "fashion_mnist.npz"
    np.savez(
        path, train_x=xt.numpy(), train_y=yt.numpy(), test_x=xs.numpy(), test_y=ys.numpy(),
        mean=np.float64(mean), std=np.float64(std),
    )  # fmt: skip
    return path


def cnnkit_worker(args: argparse.Namespace) -> int:
    """The cnnkit side of step 3 (run in its own process): the notes' model under ``Trainer.fit``
    with a callback that waits for the parent before each epoch and reports after it."""
    import torch

    from cnnkit.data import TensorBatches, load_fashion_mnist
    from cnnkit.data.datasets import channel_stats
    from cnnkit.models import create_model
    from cnnkit.tasks import get_task
    from cnnkit.train import Callback, Trainer, seed_everything

    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.recipe]
    epochs = args.epochs if args.recipe == "book" else args.best_epochs
    seed_everything(args.seed)
    (xt, yt), _, (xs, ys) = load_fashion_mnist()
    xt, yt, xs, ys = xt[: args.train_limit], yt[: args.train_limit], xs[: args.test_limit], ys[: args.test_limit]  # fmt: skip
    mean, std = channel_stats(xt.unsqueeze(1))
    model = create_model("fashion_cnn", num_classes=10, in_channels=1, dropout=recipe["dropout"])
    task = get_task("classify", label_smoothing=recipe["label_smoothing"])
    trainer = Trainer(
        model, task=task, optimizer=recipe["optimizer"], lr=recipe["lr"],
        weight_decay=recipe["weight_decay"], schedule=recipe["schedule"], device="cpu",
        precision=args.precision, seed=args.seed, progress=False,
    )  # fmt: skip
    fmt = trainer.precision.memory_format
    train = TensorBatches(
        xt, yt, recipe["batch_size"], shuffle=True, seed=args.seed, mean=mean, std=std,
        memory_format=fmt,
    )  # fmt: skip
    test = TensorBatches(xs, ys, TEST_BATCH, mean=mean, std=std, memory_format=fmt)

    class Paced(Callback):
        def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
            if sys.stdin.readline().strip() != "go":
                raise SystemExit(0)

        def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
            start = time.perf_counter()
            accuracy = trainer.evaluate(test)["accuracy"]
            row = {
                "epoch": epoch + 1, "seconds": logs["seconds"], "images": len(xt),
                "loss": logs["loss"], "accuracy": logs["accuracy"], "test_accuracy": accuracy,
                "test_seconds": time.perf_counter() - start,
            }  # fmt: skip
            print(json.dumps(row), flush=True)

    trainer.callbacks.append(Paced())
    print(json.dumps({"ready": True, "precision": trainer.precision.name}), flush=True)
    trainer.fit(train, epochs=epochs)
    return 0


def run_notes_model(args: argparse.Namespace) -> dict[str, Any]:
    from cnnkit.device import cpu_has_native_bf16

    env = child_environment(args.threads)
    script = Path(__file__).resolve()
    common = ["--threads", args.threads, "--epochs", args.epochs, "--best-epochs", args.best_epochs]
    if args.train_limit:
        common += ["--train-limit", args.train_limit]
    if args.test_limit:
        common += ["--test-limit", args.test_limit]
    plan: list[tuple[str, int, list[Any], dict[str, str]]] = []  # name, epochs, command, env
    if not args.no_keras:
        try:
            python = peer_python("keras", KERAS_PINS, isolated=True)
        except SystemExit as exc:  # pip could not build it (no network, say): go on without
            print(f"Keras left out: {exc}", flush=True)
        else:
            data = write_keras_data(args)
            worker = args.out / "keras_worker.py"
            worker.write_text(KERAS_WORKER)
            keras_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
            keras_env["TF_CPP_MIN_LOG_LEVEL"] = "2"
            keras = [python, worker, data, args.threads, args.epochs, 0]
            plan.append(("keras-book", args.epochs, keras, keras_env))
    cnnkit = [sys.executable, script, "--worker", "cnnkit", *common]
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and cpu_has_native_bf16())
    if args.book_epochs:
        book = [*cnnkit, "--recipe", "book", "--epochs", args.book_epochs]
        plan.append(("cnnkit-book", args.book_epochs, [*book, "--precision", "fp32"], env))
        if bf16:
            bf16_book = [*book, "--precision", "bf16"]
            plan.append(("cnnkit-book-bf16", args.book_epochs, bf16_book, env))
    # the best recipe in the precision cnnkit's --precision auto picks: bf16 where it is native
    best_precision = "bf16" if bf16 else "fp32"
    if args.best_epochs:
        best = [*cnnkit, "--recipe", "best", "--precision", best_precision]
        plan.append(("cnnkit-best", args.best_epochs, best, env))
    workers = [Worker(name, cmd, e, args.out / f"{name}.log") for name, _, cmd, e in plan]
    epochs = {name: count for name, count, _, _ in plan}
    for round_ in range(max(epochs.values(), default=0)):
        order = workers if round_ % 2 == 0 else workers[::-1]  # who goes first alternates
        for worker in order:
            reached = args.stop_at_92 and any(
                r["test_accuracy"] >= BOOK_TARGET for r in worker.rows
            )  # time to 92% is known: later epochs cannot change it
            if round_ < epochs[worker.name] and not reached:
                row = worker.epoch()
                print(
                    f"  {worker.name} epoch {row['epoch']}: {row['seconds']:.1f} s, test "
                    f"{row['test_accuracy']:.2%}", flush=True,
                )  # fmt: skip
    for worker in workers:
        worker.close()
    return {
        w.name: {
            "info": w.info,
            "precision": w.info.get("precision", "fp32"),  # Keras: fp32, its default
            "epochs": w.rows,
            **summarize_epochs(w.rows),
        }
        for w in workers
    }


def summarize_epochs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per epoch (median of the epochs after the first when there are any), images/s, and
    the training seconds to the first epoch whose test accuracy reaches the book's 92%."""
    steady = rows[1:] or rows
    seconds = statistics.median(row["seconds"] for row in steady)
    elapsed, to_target = 0.0, None
    for row in rows:
        elapsed += row["seconds"]
        if row["test_accuracy"] >= BOOK_TARGET:
            to_target = elapsed
            break
    return {
        "seconds_per_epoch": seconds,
        "images_per_s": rows[0]["images"] / seconds,
        "final_test_accuracy": rows[-1]["test_accuracy"],
        "seconds_to_92": to_target,
    }


# ---- the summary ------------------------------------------------------------------------------------
def summary_markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    matmul = machine["matmul_gflops"]
    lines = [
        f"CPU: {machine['cpu']['model_name']}, {results['threads']} threads; matmul "
        + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in matmul.items()),
        "",
    ]
    speed = results.get("speedrun", {})
    if speed:
        lines += [
            "| speedrun target | seeds met | wall s (median, min–max) | training s | epochs | test accuracy (median, min–max) | time to 92% | GFLOP/s (share) |",
            "|---|---:|---|---:|---:|---|---:|---|",
        ]
        for key, row in speed.items():
            w, t, a = row["wall_seconds"], row["train_seconds"], row["test_accuracy"]
            gflops = statistics.median(r["achieved_gflops"] for r in row["runs"])
            share = statistics.median(r["matmul_share"] for r in row["runs"])
            lines.append(
                f"| {key} | {row['met']}/{len(row['runs'])} | {w['median']:.0f} ({w['min']:.0f}–"
                f"{w['max']:.0f}) | {t['median']:.0f} | {row['epochs']['median']:g} | "
                f"{a['median']:.2%} ({a['min']:.2%}–{a['max']:.2%}) | {_seconds(row['seconds_to_92'])} | "
                f"{gflops:.1f} ({share:.0%}) |"
            )
        lines.append("")
    notes = results.get("notes_model", {})
    if notes:
        lines += [
            "| notes' model | precision | s/epoch | test accuracy per epoch | time to 92% | GFLOP/s (share) |",
            "|---|---|---:|---|---:|---|",
        ]
        for name, row in notes.items():
            accs = " ".join(f"{r['test_accuracy']:.3f}" for r in row["epochs"])
            lines.append(
                f"| {name} | {row['precision']} | {row['seconds_per_epoch']:.1f} | {accs} | "
                f"{_seconds(row['seconds_to_92'])} | "
                f"{row['achieved_gflops']:.1f} ({row['matmul_share']:.0%}) |"
            )
        for name, ratio in results.get("ratios", {}).items():
            lines.append(f"\n{name}: {ratio}")
    return "\n".join(lines) + "\n"


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.0f} s"


def ratios(results: dict[str, Any]) -> dict[str, str]:
    """Keras' book recipe against cnnkit: speed per epoch, and time to 92%. Where Keras never
    reached 92% in its epochs, its time to 92% is more than all of its training seconds, and the
    ratio is a lower bound ("> 6.9x")."""
    notes = results.get("notes_model", {})
    found: dict[str, str] = {}
    if "keras-book" not in notes:
        return found
    keras = notes["keras-book"]
    for name in ("cnnkit-book", "cnnkit-book-bf16"):
        if name in notes:
            speed = keras["seconds_per_epoch"] / notes[name]["seconds_per_epoch"]
            found[f"{name} speed / Keras (s per epoch)"] = f"{speed:.2f}x"
    keras_92 = keras["seconds_to_92"]
    bound = "" if keras_92 is not None else "> "
    keras_92 = keras_92 if keras_92 is not None else sum(r["seconds"] for r in keras["epochs"])
    others = {"cnnkit best recipe": notes.get("cnnkit-best", {}).get("seconds_to_92")}
    for key, row in results.get("speedrun", {}).items():
        others[f"speedrun {key}"] = row["seconds_to_92"]
    for name, seconds in others.items():
        if seconds is not None:
            found[f"time to 92%: Keras book / {name}"] = f"{bound}{keras_92 / seconds:.2f}x"
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker == "cnnkit":
        return cnnkit_worker(args)
    if args.from_results:
        results = json.loads(args.from_results.read_text())
        results["ratios"] = ratios(results)
        text = summary_markdown(results)
        args.from_results.write_text(json.dumps(results, indent=2) + "\n")
        (args.from_results.parent / "summary.md").write_text(text)
        print(text)
        return 0
    import torch

    from cnnkit.device import cpu_has_native_bf16

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    precisions = ["fp32"] + (["bf16"] if cpu_has_native_bf16() else [])
    before = {p: matmul_gflops(p) for p in precisions}
    results: dict[str, Any] = {
        "command": sys.argv,
        "threads": args.threads,
        "smoke": args.smoke,
        "machine": {"cpu": cpu_description(), "torch": torch.__version__},
    }
    if not args.no_speedrun:
        print("== speedrun", flush=True)
        results["speedrun"] = run_speedruns(args)
    if not args.no_notes:
        print("== the notes' model, epochs interleaved", flush=True)
        results["notes_model"] = run_notes_model(args)
    after = {p: matmul_gflops(p) for p in precisions}
    matmul = {p: statistics.median([before[p], after[p]]) for p in precisions}
    results["machine"]["matmul_gflops"] = matmul
    results["machine"]["matmul_gflops_start_end"] = {p: [before[p], after[p]] for p in precisions}
    notes_flops = train_flops_per_image("fashion_cnn", {"dropout": 0.5})
    results["flops_per_training_image"] = {"fashion_cnn": notes_flops}
    for row in results.get("notes_model", {}).values():
        row["achieved_gflops"] = notes_flops * row["images_per_s"] / 1e9
        row["matmul_share"] = row["achieved_gflops"] / matmul.get(row["precision"], matmul["fp32"])
    for target in results.get("speedrun", {}).values():
        for run in target["runs"]:
            flops = train_flops_per_image(run["model"], run["model_options"])
            run["flops_per_training_image"] = flops
            run["achieved_gflops"] = flops * run["images_per_s"] / 1e9
            run["matmul_share"] = run["achieved_gflops"] / matmul.get(
                run["precision"], matmul["fp32"]
            )
    results["ratios"] = ratios(results)
    text = summary_markdown(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "summary.md").write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
