"""Inference speed of the pretrained ``efficientnet_lite0``: images/s at batch 1 and 32, fp32 and bf16.

    python benchmarks/pretrained_speed.py --rounds 5

224×224 inputs, eval mode, ``torch.inference_mode``, activations channels-last (cnnkit's CPU default,
``cnnkit.device.default_precision``); bf16 is autocast (``Precision("bf16")``). The four settings
are measured interleaved, round after round, so that load from other processes hits them alike; each
round times ``--images`` images per setting after one warm-up call, and the table reports the median
over rounds (and the min-max range). Preprocessing is not timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from cnnkit.device import Precision, pick_device
from cnnkit.pretrained import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=64, help="images timed per setting per round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    model = load("efficientnet_lite0", device=device).model.to(memory_format=torch.channels_last)
    settings = [(batch, name) for name in ("fp32", "bf16") for batch in (1, 32)]
    rates: dict[tuple[int, str], list[float]] = {s: [] for s in settings}
    inputs = {
        b: torch.randn(b, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
        for b in (1, 32)
    }
    with torch.inference_mode():
        for _ in range(args.rounds):
            for batch, name in settings:
                precision = Precision(device, name, channels_last=True)
                x = inputs[batch]
                with precision.autocast():
                    model(x)  # warm-up: oneDNN picks kernels on the first call of a shape
                    calls = max(1, args.images // batch)
                    start = time.perf_counter()
                    for _ in range(calls):
                        model(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    rates[(batch, name)].append(calls * batch / (time.perf_counter() - start))
    print(
        f"device: {device} ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds"
    )
    print("| batch | precision | images/s (median) | min-max |")
    print("|---:|---|---:|---|")
    results = []
    for batch, name in settings:
        values = rates[(batch, name)]
        median = statistics.median(values)
        print(f"| {batch} | {name} | {median:.1f} | {min(values):.1f}-{max(values):.1f} |")
        results.append({"batch": batch, "precision": name, "images_per_s": round(median, 1)})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
