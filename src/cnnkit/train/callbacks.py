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


class _Monitoring(Callback):
    """A callback that watches one metric: ``monitor`` ``None`` means the task's (``trainer.task.
    monitor``, with its direction ``monitor_mode``), resolved when training begins."""

    def __init__(self, monitor: str | None) -> None:
        self.monitor = monitor
        self.mode = _mode_for(monitor) if monitor is not None else "max"
        self.best = -math.inf
        self.best_loss = math.inf
        self.validating = False

    def on_train_begin(self, trainer: Trainer) -> None:
        # with validation data, an epoch without its metrics was not validated (``val_every``):
        # it is skipped, never compared by its training metric
        self.validating = bool(getattr(trainer, "validating", False))
        if self.monitor is None:
            self.monitor, self.mode = trainer.task.monitor, trainer.task.monitor_mode
        if self.best in (math.inf, -math.inf):
            self.best = math.inf if self.mode == "min" else -math.inf

    def improves(self, logs: Logs) -> bool:
        """Whether ``logs`` beats the best so far; a tie on a metric other than the loss is broken
        by a lower ``val_loss`` (on a small validation set accuracy ties often)."""
        value = self.value(logs)
        if value is None or math.isnan(value):
            return False
        if _is_better(self.mode, value, self.best):
            return True
        loss = logs.get("val_loss")
        return (
            value == self.best
            and self.monitor != "val_loss"
            and loss is not None
            and loss < self.best_loss
        )

    def remember(self, logs: Logs) -> None:
        self.best = self.value(logs)  # type: ignore[assignment]
        self.best_loss = logs.get("val_loss", math.inf)

    def value(self, logs: Logs) -> float | None:
        """The watched value in an epoch's row (the training metric when there is no validation;
        ``None`` for an epoch that was not validated)."""
        assert self.monitor is not None
        if self.monitor in logs or self.validating:
            return logs.get(self.monitor)
        return logs.get(self.monitor.removeprefix("val_"))


class EarlyStopping(_Monitoring):
    """Stop when ``monitor`` (default: the task's) has not improved by ``min_delta`` for
    ``patience`` epochs.

    With ``restore_best`` the model gets back the weights of its best epoch when training stops.
    """

    def __init__(
        self,
        monitor: str | None = None,
        patience: int = 3,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        super().__init__(monitor)
        self.patience = patience
        self.min_delta = min_delta
        self.restore_best = restore_best
        self.best_state: dict[str, Any] | None = None
        self.wait = 0

    def on_train_begin(self, trainer: Trainer) -> None:
        super().on_train_begin(trainer)
        # A resumed run: the epochs already done set the best value and the epochs waited, as
        # they did in the uninterrupted run (their weights are in best.safetensors, not here).
        for row in trainer.history:
            if self.monitor in row:
                self._update(row[self.monitor])

    def _update(self, value: float) -> bool:
        """Record an epoch's value; whether it improved."""
        if _is_better(self.mode, value, self.best, self.min_delta):
            self.best, self.wait = value, 0
            return True
        self.wait += 1
        return False

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Logs) -> None:
        assert self.monitor is not None
        value = logs.get(self.monitor)
        if value is None and self.validating and not any(k.startswith("val_") for k in logs):
            return  # an epoch without validation (Trainer(val_every=…)): no verdict
        if value is None:
            raise KeyError(
                f"EarlyStopping: monitor {self.monitor!r} is not in the epoch's metrics {sorted(logs)}"
            )
        if self._update(value):
            if self.restore_best:
                self.best_state = {
                    k: v.detach().clone() for k, v in trainer.eval_model.state_dict().items()
                }
        else:
            if self.wait >= self.patience:
                trainer.stop_training = True
                trainer.stop_reason = (
                    f"early stopping: {self.monitor} did not improve for {self.patience} epochs"
                )

    def on_train_end(self, trainer: Trainer, history: list[Logs]) -> None:
        if self.restore_best and self.best_state is not None and trainer.stop_training:
            trainer.eval_model.load_state_dict(self.best_state)


class BestCheckpoint(_Monitoring):
    """Save ``best.safetensors`` whenever ``monitor`` (default: the task's) improves (the evaluated
    weights as the model's: with ``Trainer(ema=…)`` the moving average). The epochs
    the trainer already has (a resumed run, fine-tuning's first phase) set the score to beat."""

    def __init__(self, path: str, monitor: str | None = None) -> None:
        super().__init__(monitor)
        self.path = path

    def on_train_begin(self, trainer: Trainer) -> None:
        super().on_train_begin(trainer)
        for row in trainer.history:
            if self.improves(row):
                self.remember(row)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Logs) -> None:
        if self.improves(logs):
            self.remember(logs)
            trainer.save_checkpoint(self.path, epoch=epoch + 1, evaluated=True)
