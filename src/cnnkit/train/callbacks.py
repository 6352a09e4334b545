"""Training callbacks: hooks the trainer calls at the start and end of training and of each epoch.

A callback may set ``trainer.stop_training = True`` to end the run after the current epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnkit.train.trainer import Trainer

Logs = dict[str, Any]


class Callback:
    """Override any of the hooks; ``logs`` is the epoch's metrics row."""

    def on_train_begin(self, trainer: Trainer) -> None: ...

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Logs) -> None: ...

    def on_train_end(self, trainer: Trainer, history: list[Logs]) -> None: ...


class LambdaCallback(Callback):
    """A user function called with ``(trainer, epoch, logs)`` after each epoch."""

    def __init__(self, on_epoch_end: Callable[[Trainer, int, Logs], None]) -> None:
        self.fn = on_epoch_end

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Logs) -> None:
        self.fn(trainer, epoch, logs)


def _is_better(mode: str, value: float, best: float, min_delta: float = 0.0) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _mode_for(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the model gets back the weights of its best epoch when training stops.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 3,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.restore_best = restore_best
        self.mode = _mode_for(monitor)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_state: dict[str, Any] | None = None
        self.wait = 0

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Logs) -> None:
        value = logs.get(self.monitor)
        if value is None:
            raise KeyError(
                f"EarlyStopping: monitor {self.monitor!r} is not in the epoch's metrics {sorted(logs)}"
            )
        if _is_better(self.mode, value, self.best, self.min_delta):
            self.best, self.wait = value, 0
            if self.restore_best:
                self.best_state = {
                    k: v.detach().clone() for k, v in trainer.model.state_dict().items()
                }
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True
                trainer.stop_reason = (
                    f"early stopping: {self.monitor} did not improve for {self.patience} epochs"
                )

    def on_train_end(self, trainer: Trainer, history: list[Logs]) -> None:
        if self.restore_best and self.best_state is not None and trainer.stop_training:
            trainer.model.load_state_dict(self.best_state)


class BestCheckpoint(Callback):
    """Save ``best.safetensors`` whenever ``monitor`` improves (``val_accuracy`` by default)."""

    def __init__(self, path: str, monitor: str = "val_accuracy") -> None:
        self.path = path
        self.monitor = monitor
        self.mode = _mode_for(monitor)
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Logs) -> None:
        value = logs.get(self.monitor, logs.get(self.monitor.removeprefix("val_")))
        if value is not None and _is_better(self.mode, value, self.best):
            self.best = value
            trainer.save_checkpoint(self.path, epoch=epoch + 1)
