"""Optimizers and learning-rate schedules by name, with their usual defaults."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

# name → (class, default hyper-parameters): the one definition, which the Trainer builds and the
# memory planner plans (cnnkit.memory). Defaults are the libraries' usual ones, with momentum 0.9 for
# SGD (Keras' and torchvision's reference recipes); RMSprop with Keras' rho 0.9 and rate 1e-3.
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0}),
    "adam": (torch.optim.Adam, {"lr": 1e-3, "weight_decay": 0.0}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 0.01}),
    "nadam": (torch.optim.NAdam, {"lr": 2e-3, "weight_decay": 0.0}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "weight_decay": 0.0}),
}

SCHEDULES = ("constant", "step", "cosine", "onecycle")


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], **overrides: float | None
) -> torch.optim.Optimizer:
    """``name`` in :data:`OPTIMIZERS`; ``overrides`` set to ``None`` keep the default."""
    try:
        cls, defaults = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}"
        ) from None
    kwargs = dict(defaults)
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in defaults:
            raise ValueError(f"optimizer {name!r} takes no {key!r}; it takes {', '.join(defaults)}")
        kwargs[key] = value
    return cls(params, **kwargs)


def _schedule_factor(name: str, fraction: float, warmup_fraction: float) -> float:
    """The factor of the peak rate at ``fraction`` (0 to 1) of a run, for the time-budget schedules:
    ``onecycle`` as ``OneCycleLR`` shapes it (cosine warm-up from 1/25 of the peak, cosine decay to
    1/25e4), ``cosine`` decay to zero, ``linear`` decay to zero, ``constant``."""
    f = min(max(fraction, 0.0), 1.0)
    if name == "constant":
        return 1.0
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * f))
    if name == "linear":
        return 1.0 - f
    if name == "onecycle":
        start, end = 1 / 25, 1 / 25e4
        if f < warmup_fraction:
            t = f / warmup_fraction
            return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * t))
        t = (f - warmup_fraction) / (1 - warmup_fraction)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(
        f"schedule {name!r} cannot follow a time budget; choose one of: {', '.join(BUDGET_SCHEDULES)}"
    )


BUDGET_SCHEDULES = ("constant", "cosine", "linear", "onecycle")


class TimeBudgetSchedule(torch.optim.lr_scheduler.LRScheduler):
    """A learning-rate schedule over *time*: the rate at each step is the schedule's shape at the
    fraction of ``budget_s`` seconds elapsed, so warm-up and decay stretch to the budget whatever the
    machine does (a slower or shared machine takes fewer steps, a faster one more). ``clock`` gives
    seconds (tests pass a fake one); ``elapsed`` carries time spent before a resume."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        name: str,
        budget_s: float,
        *,
        warmup_fraction: float = 0.25,
        clock: Any = None,
        elapsed: float = 0.0,
    ) -> None:
        import time

        if budget_s <= 0:
            raise ValueError(f"time budget: expected a positive number of seconds, got {budget_s}")
        _schedule_factor(name, 0.0, warmup_fraction)  # an unknown name fails here
        self.name, self.budget_s, self.warmup_fraction = name, budget_s, warmup_fraction
        self.clock = clock or time.perf_counter
        self.elapsed_before = elapsed
        self.started: float | None = None
        super().__init__(optimizer)

    def elapsed(self) -> float:
        """Seconds of the budget spent (the clock starts at the first step)."""
        if self.started is None:
            return self.elapsed_before
        return self.elapsed_before + self.clock() - self.started

    def fraction(self) -> float:
        return self.elapsed() / self.budget_s

    def exhausted(self) -> bool:
        return self.fraction() >= 1.0

    def get_lr(self) -> list[float]:  # type: ignore[override]
        if self.started is None and self.last_epoch > 0:
            self.started = self.clock()
        factor = _schedule_factor(self.name, self.fraction(), self.warmup_fraction)
        return [float(base) * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed(), "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.elapsed_before, self.started = float(state["elapsed"]), None
        self.last_epoch = int(state["last_epoch"])


def make_schedule(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: int,
    step_epochs: int = 10,
    step_gamma: float = 0.1,
    warmup_fraction: float = 0.25,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-batch learning-rate schedule.

    - ``constant``: the optimizer's rate throughout.
    - ``step``: multiply by ``step_gamma`` every ``step_epochs`` epochs.
    - ``cosine``: cosine decay to zero over the run.
    - ``onecycle``: Smith & Topin's 1cycle, peaking at the optimizer's rate after ``warmup_fraction``.
    """
    total_steps = max(1, total_steps)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=max(1, step_epochs * steps_per_epoch), gamma=step_gamma
        )
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)),
        )
    if name == "onecycle":
        if total_steps < 4:  # too short for a warm-up and an annealing phase of a step each
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=max_lr,
            total_steps=total_steps + 1,  # OneCycleLR raises on a step past the end
            pct_start=max(warmup_fraction, 2 / total_steps),  # at least 2 warm-up steps
            cycle_momentum=False,
        )
    raise ValueError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
