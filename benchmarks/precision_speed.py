"""Training speed of the notes' Fashion-MNIST CNN in fp32 and in bf16 autocast, on this CPU.

What ``--precision auto`` decides from: bf16 pays only where the CPU computes it natively (AVX-512
BF16 / AMX); on AVX2-only CPUs oneDNN emulates it and it is many times slower. Both precisions
train the same model on the same real batches (channels_last, AdamW), interleaved round by round
(alternating which goes first); the medians and their ratio are printed with the CPU's name and
flags.

    .venv/bin/python benchmarks/precision_speed.py --rounds 5 --steps 30 --batch-size 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from peers import cpu_line

from cnnkit.data import TensorBatches, load_fashion_mnist
from cnnkit.device import Precision, cpu_has_native_bf16
from cnnkit.models import create_model
from cnnkit.train import make_optimizer


def images_per_s(precision: str, batches: TensorBatches, steps: int) -> float:
    torch.manual_seed(0)
    model = create_model("fashion_cnn", num_classes=10, in_channels=1, dropout=0.0)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = make_optimizer("adamw", model.parameters())
    autocast = Precision(torch.device("cpu"), precision, True).autocast
    iterator = iter(batches)
    for _ in range(3):  # warm-up: oneDNN picks and caches its kernels
        x, y = next(iterator)
        with autocast():
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        x, y = next(iterator)
        with autocast():
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="measured training steps per round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    (x, y), _, _ = load_fashion_mnist()
    batches = TensorBatches(
        x, y, args.batch_size, shuffle=True, mean=(0.286,), std=(0.353,),
        memory_format=torch.channels_last,
    )  # fmt: skip
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(args.rounds):
        order = ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")
        for precision in order:
            rates[precision].append(images_per_s(precision, batches, args.steps))
    fp32, bf16 = statistics.median(rates["fp32"]), statistics.median(rates["bf16"])
    print(f"CPU: {cpu_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"native bf16 (cnnkit.device.cpu_has_native_bf16): {cpu_has_native_bf16()}")
    print(
        f"fashion_cnn training, batch {args.batch_size}, {args.rounds} rounds x {args.steps} steps:"
    )
    print(f"  fp32 {fp32:7.1f} img/s   bf16 {bf16:7.1f} img/s   bf16/fp32 {bf16 / fp32:.2f}x")


if __name__ == "__main__":
    main()
