"""Predicted vs measured peak memory of a training step and of inference, model by model.

The prediction is ``cnnkit.memory.estimate`` (a trace on fake tensors, in this process). The
measurement is independent of it: each case runs in a fresh Python process that builds the real model
and runs real steps, and reports

- on CPU, the peak resident set size during the measured run minus the resident size just before it:
  the child first runs the whole case once (so libraries, oneDNN kernels and their caches are loaded),
  frees it, returns free heap to the kernel (``malloc_trim``), reads VmRSS, resets the high-water mark
  (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0), runs the case again and reads VmHWM. glibc keeps
  freed blocks in its heap and raises its mmap threshold dynamically, so by default RSS stays above the
  live allocations; the child runs with ``MALLOC_MMAP_THRESHOLD_=65536``, which fixes the threshold, so
  every tensor larger than 64 KiB is its own mapping, returned to the kernel when freed, and RSS follows
  what is live (``--malloc default`` measures with glibc's defaults instead);
- on CUDA, ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``.

A training step is the trainer's: ``zero_grad(set_to_none=True)``, forward, cross-entropy (auxiliary
heads weighted 0.3), backward, SGD with momentum 0.9 (the trainer's default); two steps are measured,
so the optimizer state exists throughout the second, and the model runs channels-last as the trainer
does on CPU. Inference is one ``no_grad`` forward in eval mode.

    .venv/bin/python benchmarks/memory_accuracy.py              # the README table (about 10 min, 2 cores)
    .venv/bin/python benchmarks/memory_accuracy.py --models fashion_cnn resnet18
    .venv/bin/python benchmarks/memory_accuracy.py --max-batch  # max_batch_size, resnet50, 2 GiB
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

# model → (input (C, H, W), classes, the two batch sizes)
CASES = {
    "fashion_cnn": ((1, 28, 28), 10, (32, 256)),
    "lenet5": ((1, 32, 32), 10, (32, 256)),
    "resnet18": ((3, 224, 224), 1000, (4, 16)),
    "resnet50": ((3, 224, 224), 1000, (2, 8)),
    "vgg16": ((3, 224, 224), 1000, (2, 8)),
    "googlenet": ((3, 224, 224), 1000, (4, 16)),
}
OPTIMIZER = "sgd"  # SGD(momentum=0.9): the trainer's "sgd", which the planner plans exactly


def build(name: str, shape: tuple[int, int, int], classes: int) -> torch.nn.Module:
    """Our zoo's model; torchvision's equivalent when the zoo does not have it (said in the output)."""
    from cnnkit.models import create_model, list_models

    if name in list_models():
        return create_model(name, num_classes=classes, in_channels=shape[0])
    import torchvision

    return getattr(torchvision.models, name)(weights=None, num_classes=classes)


# ---------------------------------------------------------------- the measuring child process


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _run_case(case: dict, device: torch.device) -> None:
    shape, classes, batch = tuple(case["shape"]), case["classes"], case["batch"]
    model = build(case["model"], shape, classes).to(device)
    x = torch.randn(batch, *shape, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    if device.type == "cpu":  # the trainer's CPU default (cnnkit.device.default_precision)
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if case["mode"] == "inference":
        model.eval()
        with torch.no_grad():
            model(x)
        return
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        out = model(x)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        loss = F.cross_entropy(outs[0], y) + sum(0.3 * F.cross_entropy(o, y) for o in outs[1:])
        del out, outs
        loss.backward()
        del loss
        opt.step()


def child(case: dict) -> dict:
    torch.set_num_threads(case.get("threads", 2))
    device = torch.device(case["device"])
    if device.type == "cuda":
        _run_case(case, device)  # warm-up: cuDNN handles, kernels
        gc.collect()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _run_case(case, device)
        torch.cuda.synchronize()
        return {"measured_bytes": torch.cuda.max_memory_allocated() - base}
    _run_case(case, device)  # warm-up: library pages, oneDNN kernels and caches
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    _run_case(case, device)
    return {"measured_bytes": _status("VmHWM") - base, "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------- the parent


def measure(case: dict, malloc: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(case.get("threads", 2)))
    if malloc == "fixed":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(case)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def predict(case: dict) -> int:
    from cnnkit.memory import estimate

    shape = tuple(case["shape"])
    model = build(case["model"], shape, case["classes"])
    report = estimate(
        model,
        shape,
        case["batch"],
        mode=case["mode"],
        optimizer=OPTIMIZER,
        device=case["device"],
        suggestions=False,
    )
    return report.peak_bytes


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def table(models: list[str], device: str, malloc: str) -> list[dict]:
    from cnnkit.models import list_models

    zoo = set(list_models())
    results = []
    print("| model | mode | batch | predicted MiB | measured MiB | error |")
    print("|---|---|---:|---:|---:|---:|")
    for name in models:
        shape, classes, batches = CASES[name]
        for mode in ("train", "inference"):
            for batch in batches:
                case = dict(
                    model=name, shape=shape, classes=classes, batch=batch, mode=mode, device=device
                )
                predicted = predict(case)
                measured = measure(case, malloc)["measured_bytes"]
                error = (predicted - measured) / measured
                label = name if name in zoo else f"{name} (torchvision)"
                print(
                    f"| {label} | {mode} | {batch} | {mib(predicted)} | {mib(measured)} | "
                    f"{100 * error:+.1f}% |",
                    flush=True,
                )
                results.append(dict(case, predicted=predicted, measured=measured, error=error))
    return results


def max_batch_check(device: str, malloc: str, budget: int = 2 * 2**30) -> dict:
    """``max_batch_size`` for resnet50 at 224x224 under 2 GiB: measure the returned batch."""
    from cnnkit.memory import estimate, max_batch_size

    shape, classes = (3, 224, 224), 1000
    model = build("resnet50", shape, classes)
    start = time.perf_counter()
    batch = max_batch_size(model, shape, budget, optimizer=OPTIMIZER, device=device)
    seconds = time.perf_counter() - start
    over = int(1.25 * batch)
    predicted_over = estimate(
        model, shape, over, optimizer=OPTIMIZER, device=device, suggestions=False
    ).peak_bytes
    case = dict(
        model="resnet50", shape=shape, classes=classes, batch=batch, mode="train", device=device
    )
    measured = measure(case, malloc)["measured_bytes"]
    print(f"max_batch_size(resnet50, (3, 224, 224), 2 GiB, optimizer={OPTIMIZER!r}) = {batch}")
    print(f"  planning took {seconds:.1f} s")
    print(f"  measured peak at batch {batch}: {mib(measured)} MiB of {mib(budget)} MiB")
    print(f"  predicted peak at batch {over} (1.25x): {mib(predicted_over)} MiB")
    return dict(batch=batch, measured=measured, over=over, predicted_over=predicted_over)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--malloc", choices=("fixed", "default"), default="fixed")
    parser.add_argument("--max-batch", action="store_true", help="only the max_batch_size check")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, device {args.device}, malloc {args.malloc}"
    )
    if args.max_batch:
        results = max_batch_check(args.device, args.malloc)
    else:
        results = table(args.models, args.device, args.malloc)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
