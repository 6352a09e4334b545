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
