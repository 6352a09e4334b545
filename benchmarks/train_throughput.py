"""Training throughput of the notes' Fashion-MNIST CNN: cnnkit's Trainer vs a bare PyTorch loop.

Both train the same model on the same real Fashion-MNIST batches (channels_last, fp32, AdamW,
1cycle); the two are interleaved round by round (alternating which goes first) and the medians
compared. The achieved GFLOP/s (from torch.utils.flop_counter) is put against a large fp32 matmul's
GFLOP/s measured in the same run, as a share of what this CPU can do.

    .venv/bin/python benchmarks/train_throughput.py --rounds 5 --batches 40
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cnnkit.data import TensorBatches, load_fashion_mnist
from cnnkit.models import create_model
from cnnkit.train import Trainer, make_optimizer, make_schedule


def bare_epoch(model: torch.nn.Module, batches: TensorBatches) -> float:
    """The loop a user would write by hand; returns images/s."""
    optimizer = make_optimizer("adamw", model.parameters())
    schedule = make_schedule(
        "onecycle", optimizer, total_steps=len(batches), steps_per_epoch=len(batches)
    )
    model.train()
    start = time.perf_counter()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return batches.num_samples / (time.perf_counter() - start)


def trainer_epoch(
    model: torch.nn.Module, batches: TensorBatches, progress: bool, precision: str = "fp32"
) -> float:
    trainer = Trainer(model, progress=progress, precision=precision, channels_last=True)
    history = trainer.fit(batches, epochs=1)
    return history[-1]["images_per_s"]


def train_step_flops(model: torch.nn.Module, batch_size: int) -> int:
    x = torch.randn(batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(batch_size, dtype=torch.long)).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=40, help="batches per measured epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--progress", action="store_true", help="trainer with its progress bar")
    parser.add_argument(
        "--bf16", action="store_true", help="also time the trainer with bf16 autocast each round"
    )
    args = parser.parse_args()

    (x, y), _, _ = load_fashion_mnist()
    n = args.batches * args.batch_size
    batches = TensorBatches(
        x[:n], y[:n], args.batch_size, shuffle=True, mean=(0.286,), std=(0.353,),
        memory_format=torch.channels_last,
    )  # fmt: skip
    torch.manual_seed(0)
    model = create_model("fashion_cnn", num_classes=10, in_channels=1).to(
        memory_format=torch.channels_last
    )
    flops_per_image = train_step_flops(model, args.batch_size) / args.batch_size
    bare_epoch(model, batches)  # warm-up: oneDNN primitive caches, allocator
    bare, ours, bf16, matmul = [], [], [], []
    for r in range(args.rounds):
        order = [("bare", bare), ("trainer", ours)]
        for name, results in order if r % 2 == 0 else order[::-1]:
            if name == "bare":
                results.append(bare_epoch(model, batches))
            else:
                results.append(trainer_epoch(model, batches, args.progress))
        if args.bf16:
            bf16.append(trainer_epoch(model, batches, args.progress, "bf16"))
        matmul.append(matmul_gflops())
        print(
            f"round {r + 1}: bare {bare[-1]:.1f} img/s, trainer {ours[-1]:.1f} img/s, matmul {matmul[-1]:.1f} GFLOP/s"
        )
    b, t, m = statistics.median(bare), statistics.median(ours), statistics.median(matmul)
    achieved = t * flops_per_image / 1e9
    print(
        f"\nthreads {torch.get_num_threads()}, batch {args.batch_size}, {n} images per epoch, {args.rounds} rounds"
    )
    print("| loop | images/s (median) | relative |")
    print("|---|---|---|")
    print(f"| bare PyTorch loop | {b:.1f} | 1.000 |")
    print(f"| cnnkit Trainer{' (progress bar)' if args.progress else ''} | {t:.1f} | {t / b:.3f} |")
    if bf16:
        h = statistics.median(bf16)
        print(f"| cnnkit Trainer, bf16 autocast | {h:.1f} | {h / b:.3f} |")
    print(f"\ntrainer overhead: {(1 - t / b) * 100:+.1f}%")
    for name, rate in [("fp32", t)] + ([("bf16", statistics.median(bf16))] if bf16 else []):
        print(f"one Fashion-MNIST epoch (55,000 images) at {name}: {55_000 / rate:.0f} s")
    print(f"training FLOPs per image: {flops_per_image / 1e6:.1f} MFLOP (forward + backward)")
    print(
        f"achieved: {achieved:.1f} GFLOP/s = {achieved / m:.1%} of a 2048x2048 fp32 matmul ({m:.1f} GFLOP/s)"
    )


if __name__ == "__main__":
    main()
