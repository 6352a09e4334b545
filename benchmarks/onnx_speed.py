"""Inference speed, PyTorch eager vs onnxruntime (CPU): images/s at batch 1 and 32 (issue 16).

    python benchmarks/onnx_speed.py --models fashion_cnn resnet18_small efficientnet_lite0 --rounds 5

Each model is built from the registry (random weights: speed does not depend on their values), at
its paper input size unless ``--size`` is given, exported with ``cnnkit.deploy.onnx.export_onnx``
(``--dynamic-batch``, so one graph serves both batch sizes), and run in eval mode:
PyTorch under ``torch.inference_mode`` in NCHW float32 (channels-last too with ``--channels-last``),
onnxruntime with its default CPU graph optimisations. Both use ``--threads`` threads (default: all
cores). Settings are measured interleaved, round after round, so load from other processes hits
them alike; each round times ``--images`` images per setting after one warm-up call; the table
reports the median over rounds and the min-max range. Preprocessing is not timed. The largest
output difference between the two is printed as a check.

Run it on an idle machine: on shared cores the numbers say little.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cnnkit.data.datasets import DataMeta
from cnnkit.deploy.onnx import OnnxModel, export_onnx, max_difference
from cnnkit.models import create_model, model_info
from cnnkit.tasks import get_task

BATCHES = (1, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["fashion_cnn", "resnet18_small", "efficientnet_lite0"]
    )
    parser.add_argument("--size", type=int, default=None, help="input side (default: the paper's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=64, help="images timed per setting per round")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--channels-last", action="store_true", help="PyTorch in channels-last")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(
        f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{threads} threads, {args.rounds} rounds of {args.images} images per setting\n"
    )
    print(
        "| model | input | batch | PyTorch eager img/s | onnxruntime img/s | speed-up | max diff |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    folder = Path(tempfile.mkdtemp(prefix="onnx-speed-"))
    for name in args.models:
        info = model_info(name)
        channels = info.input_size[0]
        side = args.size or info.input_size[1]
        model = create_model(name, num_classes=10, in_channels=channels).eval()
        meta = DataMeta(
            "benchmark", (channels, side, side), tuple(f"c{i}" for i in range(10)),
            (0.5,) * channels, (0.25,) * channels,
        )  # fmt: skip
        path = export_onnx(
            model, meta, get_task("classify"), folder / f"{name}.onnx", dynamic_batch=True
        )
        session = OnnxModel(path, threads=threads)
        memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        inputs = {b: torch.randn(b, channels, side, side) for b in BATCHES}
        rates: dict[tuple[str, int], list[float]] = {
            (engine, b): [] for engine in ("torch", "onnx") for b in BATCHES
        }
        with torch.inference_mode():
            difference = max_difference(model(inputs[1]), session(inputs[1]))
            for _ in range(args.rounds):
                for batch in BATCHES:
                    x = inputs[batch]
                    x_torch = x.contiguous(memory_format=memory_format)
                    x_numpy = x.numpy()
                    for engine, call in (
                        ("torch", functools.partial(model, x_torch)),
                        ("onnx", functools.partial(session, x_numpy)),
                    ):
                        call()  # warm-up: kernels are picked on the first call of a shape
                        calls = max(1, args.images // batch)
                        start = time.perf_counter()
                        for _ in range(calls):
                            call()
                        rates[(engine, batch)].append(calls * batch / (time.perf_counter() - start))
        for batch in BATCHES:
            torch_rate = statistics.median(rates[("torch", batch)])
            onnx_rate = statistics.median(rates[("onnx", batch)])
            spread = {
                e: f"{min(rates[(e, batch)]):.0f}-{max(rates[(e, batch)]):.0f}"
                for e in ("torch", "onnx")
            }
            print(
                f"| {name} | {channels}×{side}×{side} | {batch} | {torch_rate:.0f} ({spread['torch']}) "
                f"| {onnx_rate:.0f} ({spread['onnx']}) | {onnx_rate / torch_rate:.2f}× | {difference:.1e} |"
            )


if __name__ == "__main__":
    main()
