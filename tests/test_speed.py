"""Speed: a learning-rate schedule over time (``--time-budget``), and precision chosen at run time."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys

import pytest
import torch

from cnnkit.device import cpu_has_native_bf16
from cnnkit.train.optim import TimeBudgetSchedule


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _schedule(
    name: str, budget: float = 100.0
) -> tuple[TimeBudgetSchedule, FakeClock, torch.optim.Optimizer]:
    clock = FakeClock()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return TimeBudgetSchedule(optimizer, name, budget, clock=clock), clock, optimizer


def _rate_at(name: str, seconds: float) -> float:
    schedule, clock, optimizer = _schedule(name)
    optimizer.step()
    schedule.step()  # the clock starts at the first step
    clock.now = seconds
    optimizer.step()
    schedule.step()
    return optimizer.param_groups[0]["lr"]


def test_onecycle_over_time_warms_up_for_a_quarter_of_the_budget_then_decays():
    # OneCycleLR's shape (cosine warm-up from peak/25, cosine decay to peak/25e4), on time
    assert _rate_at("onecycle", 0) == pytest.approx(1 / 25)
    assert _rate_at("onecycle", 12.5) == pytest.approx(1 / 25 + (1 - 1 / 25) * 0.5)
    assert _rate_at("onecycle", 25) == pytest.approx(1.0)
    assert _rate_at("onecycle", 62.5) == pytest.approx(1 / 25e4 + (1 - 1 / 25e4) * 0.5)
    assert _rate_at("onecycle", 100) == pytest.approx(1 / 25e4)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("cosine", 0.5 * (1 + math.cos(math.pi * 0.3))), ("linear", 0.7), ("constant", 1.0)],
)
def test_other_shapes_over_time(name, expected):
    assert _rate_at(name, 30) == pytest.approx(expected)


def test_the_budget_is_exhausted_when_its_time_has_passed_and_survives_a_resume():
    schedule, clock, optimizer = _schedule("linear", budget=10.0)
    optimizer.step()
    schedule.step()
    clock.now = 4.0
    state = schedule.state_dict()
    assert state["elapsed"] == pytest.approx(4.0) and not schedule.exhausted()
    resumed, clock2, optimizer2 = _schedule("linear", budget=10.0)
    resumed.load_state_dict(state)
    clock2.now = 100.0
    optimizer2.step()
    resumed.step()  # the resumed clock restarts here, with 4 s already spent
    clock2.now = 106.0
    assert resumed.exhausted() and resumed.elapsed() == pytest.approx(10.0)


def test_an_unknown_shape_or_budget_is_refused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="cannot follow a time budget; choose one of"):
        TimeBudgetSchedule(optimizer, "step", 10)
    with pytest.raises(ValueError, match="expected a positive number of seconds"):
        TimeBudgetSchedule(optimizer, "onecycle", 0)


def test_native_bf16_is_what_the_cpu_flags_say():
    """torch's probes agree with the kernel's view of the CPU (/proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read().split()
    except OSError:
        pytest.skip("no /proc/cpuinfo on this system")
    assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_a_time_budget_ends_training_on_time_with_the_schedule_run_out(fashion_mnist):
    """The run stops at the logged step after the budget is spent, whatever --epochs says, with
    the one-cycle schedule at its end; validation still runs on the last (partial) epoch."""
    import time

    from torch import nn

    from cnnkit.data import TensorBatches
    from cnnkit.train import Trainer

    (x, y), (xv, yv), _ = fashion_mnist
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                          nn.Linear(8 * 7 * 7, 10))  # fmt: skip
    trainer = Trainer(model, lr=3e-3, time_budget=1.5, progress=False, device="cpu", log_every=5)
    train = TensorBatches(x[:4096], y[:4096], 32, shuffle=True, mean=(0.286,), std=(0.353,))
    valid = TensorBatches(xv[:500], yv[:500], 500, mean=(0.286,), std=(0.353,))
    start = time.perf_counter()
    history = trainer.fit(train, valid, epochs=1000)
    assert time.perf_counter() - start < 1.5 + 2.0  # the budget, the last log window, validation
    assert trainer.stop_reason is not None and trainer.stop_reason.startswith("time budget of 2 s")
    assert len(history) < 1000 and "val_accuracy" in history[-1]
    assert history[-1]["lr"] < 3e-3 / 100  # one-cycle over time has run to its end
    assert history[-1]["val_accuracy"] > 0.5  # it learnt in the time it had


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively():
    from cnnkit.device import default_precision

    cpu = torch.device("cpu")
    assert default_precision(cpu, "auto").name == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert default_precision(cpu, None).name == "fp32"  # the Python API stays exact by default
    assert default_precision(cpu, "bf16").name == "bf16"  # forced


_FAULTS = """
import resource, sys, torch
from cnnkit.device import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False

def faults_of_a_fresh_100mb_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(25_000_000)  # 100 MB, written once, then freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

# a training step's pattern: the same large tensors, again and again; the first few steps settle
# the heap (each 64-byte-aligned block leaves a gap that the next does not fit), then it is reused
faults = [faults_of_a_fresh_100mb_tensor() for _ in range(16)]
print(applied, max(faults[-4:]))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's (Linux)")
def test_keeping_freed_memory_stops_large_tensors_faulting_their_pages_in_each_time() -> None:
    def run(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
            env={**os.environ, **(env or {})},
        ).stdout.split()  # fmt: skip
        return out[0], int(out[1])

    # glibc's default: each 100 MB tensor gets fresh pages, faulted in as it is written (25,000
    # 4-KB pages; at least 50 with 2-MB transparent huge pages); kept: the heap's pages, again
    default = run("default")[1]
    applied, kept = run("keep")
    assert applied == "True" and default >= 50 and kept <= default // 10
    # CNNKIT_KEEP_HEAP=0: left as it is
    assert run("keep", {"CNNKIT_KEEP_HEAP": "0"})[0] == "False"
