"""The training loop: fit / evaluate / predict with checkpoints, schedules, callbacks and a progress bar.

The ``Trainer`` knows no task: the loss, the metrics, what the output means and which metric to
watch come from a :class:`cnnkit.tasks.Task` (classification by default). Data is any iterable of
``(images, targets)`` batches with a ``len``: a ``cnnkit.data.TensorBatches`` for in-memory datasets,
or a ``torch.utils.data.DataLoader``; targets may be tensors, or dicts and lists of them (boxes,
masks), and are moved to the device as they are. Evaluation streams: the task's metric is updated
batch by batch on the device, so host memory does not grow with the evaluation set.

What survives an interruption (``cnnkit.train.rundir`` names the files):

- ``last.safetensors`` is written at the end of each epoch, after validation, ``metrics.jsonl``,
  ``steps.jsonl`` and the callbacks (``best.safetensors``): it always holds the state at an epoch's
  start — weights, optimizer, the schedule's position and the epoch count. Nothing else is written
  during an epoch.
- Ctrl-C (``KeyboardInterrupt``) and SIGKILL are therefore the same: the unfinished epoch is lost
  and ``fit(resume=True)`` redoes it from that checkpoint. The redone epoch is bit for bit the
  uninterrupted one, because everything it depends on is restored or re-derived: the weights, the
  optimizer and the schedule from the checkpoint; the batch order and flips from ``seed + epoch``
  (``TensorBatches``, ``DistributedSampler.set_epoch``, a ``DataLoader``'s ``generator`` reseeded
  here); dropout (and a ``DataLoader``'s random transforms without workers) from
  ``torch.manual_seed(seed * 1_000_003 + epoch)`` at the epoch's start; the best score so far from
  the first ``epoch`` rows of ``metrics.jsonl`` (later rows, from the lost epoch, are dropped).
  We chose this over continuing mid-epoch at the interrupted step: that would need the step, the
  RNG state after it, the streaming metrics' sums and a signal handler deferring Ctrl-C to a step
  boundary (an interrupt inside ``optimizer.step`` leaves half-updated weights), and SIGKILL could
  still not save it; the price is at most one epoch of work.
- ``fit(resume=True)`` on a folder with no checkpoint (killed in its first epoch) starts the run
  from the beginning; stale temporaries of interrupted writes are removed when a run starts.

A non-finite loss or gradient is caught at the step it appears, before ``optimizer.step`` (one
host sync per step, as ``torch.amp.GradScaler`` makes for its inf check): ``on_nonfinite="stop"``
raises :class:`NonFiniteLossError`, leaving ``last.safetensors`` at the last good epoch;
``"skip"`` drops that batch's update (the schedule still advances, so the plan keeps its length)
and counts it in the epoch's ``skipped_batches``.

With ``ema=DECAY`` the trainer keeps an exponential moving average of the weights
(``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(DECAY)`` and
``use_buffers=True``, so BatchNorm's running statistics are averaged too), updated after every
``ema_every``-th optimizer step of an epoch. Validation, ``evaluate``, ``predict`` and
``best.safetensors`` (whose ``model/`` tensors are then the average's) use the average
(:attr:`Trainer.eval_model`); ``last.safetensors`` holds both, so ``--resume`` restores it exactly.
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from cnnkit.device import default_precision, keep_freed_memory, pick_device
from cnnkit.tasks import StreamingMetric, Task, get_task
from cnnkit.train import distributed, rundir
from cnnkit.train.callbacks import BestCheckpoint, Callback
from cnnkit.train.checkpoint import load_checkpoint, save_checkpoint
from cnnkit.train.optim import TimeBudgetSchedule, make_optimizer, make_schedule


class Batches(Protocol):
    """What ``fit`` trains on: an iterable of ``(images, targets)`` batches with a length."""

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients became NaN or infinite; training stopped before the bad update."""


#: what ``Trainer(on_nonfinite=...)`` accepts
NONFINITE_POLICIES = ("stop", "skip")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in it (nested in dicts, lists and tuples) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def _concat(parts: list[Any]) -> Any:
    """Decoded batches → one result: tensors concatenated, lists of per-image results joined."""
    if parts and all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(parts)
    return [item for part in parts for item in part]


class Trainer:
    """Train and evaluate a model on a task.

    ``task``: a :class:`cnnkit.tasks.Task` (default ``get_task("classify")``: cross-entropy,
    accuracy). ``optimizer``: ``sgd`` (momentum 0.9), ``adam``, ``adamw``, ``nadam``;
    ``lr``/``weight_decay``/``momentum`` left ``None`` keep that optimizer's default. ``schedule``:
    ``onecycle``, ``cosine``, ``step``, ``constant``. ``precision``: ``fp32``, ``bf16`` (autocast) or
    ``None``/``auto`` (:func:`cnnkit.device.default_precision` decides). With ``out_dir`` the run
    directory of :mod:`cnnkit.train.rundir` is written. ``log_extra`` is added to every epoch's row.
    ``on_nonfinite``: ``stop`` (raise :class:`NonFiniteLossError`) or ``skip`` the batch whose loss
    or gradients are NaN or infinite (see the module's docstring). ``ema``: keep a moving average of
    the weights with this decay per update, updated every ``ema_every`` steps, and evaluate it
    (see the module's docstring). ``val_every``: ``fit`` validates after every ``val_every``-th
    epoch and after the last one (the epoch count reached or the time budget spent); ``0``: the last
    only. Epochs without validation have no ``val_*`` keys, and the monitoring callbacks skip them.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        task: Task | None = None,
        optimizer: str = "adamw",
        lr: float | None = None,
        weight_decay: float | None = None,
        momentum: float | None = None,
        schedule: str = "onecycle",
        time_budget: float | None = None,
        grad_clip: float | None = None,
        device: str | torch.device | None = None,
        precision: str | None = None,
        channels_last: bool | None = None,
        callbacks: Iterable[Callback] = (),
        seed: int = 0,
        out_dir: str | os.PathLike | None = None,
        config: dict[str, Any] | None = None,
        progress: bool = True,
        log_every: int = 10,
        log_extra: dict[str, Any] | None = None,
        on_nonfinite: str = "stop",
        ema: float | None = None,
        ema_every: int = 1,
        val_every: int = 1,
    ) -> None:
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                f"on_nonfinite: expected one of {', '.join(NONFINITE_POLICIES)}, got {on_nonfinite!r}"
            )
        self.on_nonfinite = on_nonfinite
        self.device = pick_device(device)
        multi = distributed.world_size_from_env() > 1
        if multi and self.device.type == "cuda" and self.device.index is None:
            # one GPU per process under torchrun
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = distributed.setup(self.device)
        self.precision = default_precision(self.device, precision)
        if self.device.type == "cpu":
            keep_freed_memory()  # 1.2-1.4x the training steps/s on a 2-core CPU (device.py)
        if channels_last is not None:
            self.precision = type(self.precision)(self.device, self.precision.name, channels_last)
        self.model = model.to(self.device).to(memory_format=self.precision.memory_format)
        # What the training step calls: the model itself, or its DDP wrapper under torchrun. DDP
        # records which parameters train when it is built: after freezing or unfreezing layers,
        # build a new Trainer (fine_tune does).
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=device_ids
            )
        if ema is not None and not 0.0 < ema < 1.0:
            raise ValueError(f"ema: expected a decay between 0 and 1, got {ema}")
        if ema_every < 1:
            raise ValueError(f"ema_every: expected a positive number of steps, got {ema_every}")
        self.ema_decay, self.ema_every = ema, ema_every
        if val_every < 0:
            raise ValueError(f"val_every: expected a number of epochs >= 0, got {val_every}")
        #: validate after every ``val_every``-th epoch and after the last (0: the last only)
        self.val_every = val_every
        #: whether the current ``fit`` has validation data (callbacks then skip epochs without it)
        self.validating = False
        #: the moving average of the weights (``ema``), a copy of the model on the same device
        self.ema: AveragedModel | None = None
        if ema is not None:
            self.ema = AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(ema), use_buffers=True
            )
        self.task = task if task is not None else get_task("classify")
        self.task.setup(self.model)
        self.optimizer_name = optimizer
        self.optimizer_options: dict[str, float | None] = {"lr": lr, "weight_decay": weight_decay}
        if momentum is not None:
            self.optimizer_options["momentum"] = momentum
        self.optimizer = self.configure_optimizer()
        self.schedule = schedule
        # With a time budget (seconds) the schedule follows elapsed time and fit stops when it is
        # spent (at the next logged step), whatever the epoch count says.
        self.time_budget = time_budget
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.grad_clip = grad_clip
        self.callbacks = list(callbacks)
        self.seed = seed
        self.run = rundir.RunDir(out_dir) if out_dir is not None else None
        self.config = dict(config or {})
        self.progress = progress and self.dist.is_main
        self.log_every = max(1, log_every)
        self.log_extra = dict(log_extra or {})
        self.history: list[dict[str, Any]] = []
        #: the training loss every ``log_every`` steps: ``{"epoch": fraction, "loss": mean}``
        self.steps: list[dict[str, float]] = []
        self.epoch = 0  # epochs completed
        self.start_epoch = 0  # the epoch this trainer's schedule starts at (fine_tune's phase 2)
        self.planned_epochs: int | None = None  # the epoch the schedule ends at
        self.stop_training = False
        self.stop_reason: str | None = None
        #: the epoch ``fit(resume=True)`` continued from (``None``: the run started from scratch)
        self.resumed_from: int | None = None
        #: the epoch count ``last.safetensors`` holds (``None``: no checkpoint yet)
        self.checkpoint_epoch: int | None = None

    # ----------------------------------------------------------------------------- set-up
    def configure_optimizer(
        self, name: str | None = None, **options: float | None
    ) -> torch.optim.Optimizer:
        """(Re)build the optimizer over the parameters that currently require gradients.

        Call it after freezing or unfreezing layers; ``options`` override the stored ``lr`` etc.
        """
        self.optimizer_name = name or self.optimizer_name
        self.optimizer_options.update(options)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters (everything is frozen)")
        self.optimizer = make_optimizer(self.optimizer_name, params, **self.optimizer_options)
        self.scheduler = None
        return self.optimizer

    def run_config(self, epochs: int, batch_size: int | None) -> dict[str, Any]:
        """What ``config.json`` holds: ``config`` given to the constructor, the task, and the
        trainer's settings."""
        return {
            **self.config,
            "task": {"name": self.task.name, "options": self.task.options()},
            "trainer": {
                "optimizer": self.optimizer_name,
                **{k: v for k, v in self.optimizer.defaults.items() if isinstance(v, (int, float))},
                "schedule": self.schedule,
                "time_budget_s": self.time_budget,
                "epochs": epochs,
                "batch_size": batch_size,
                "grad_clip": self.grad_clip,
                "on_nonfinite": self.on_nonfinite,
                "precision": self.precision.name,
                "channels_last": self.precision.channels_last,
                "device": str(self.device),
                "seed": self.seed,
                "world_size": self.dist.world_size,
                # only when set, so that runs written before EMA existed resume unchanged
                **(
                    {"ema": self.ema_decay, "ema_every": self.ema_every}
                    if self.ema is not None
                    else {}
                ),
                # likewise only when not every epoch is validated
                **({"val_every": self.val_every} if self.val_every != 1 else {}),
            },
        }

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation, ``evaluate``, ``predict`` and ``best.safetensors`` use: the moving
        average with ``ema``, else the model itself."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def reduce(self) -> distributed.Reduce:
        """Sums a tensor over every DDP process (the identity when running alone)."""
        return distributed.reducer(self.dist)

    # ----------------------------------------------------------------------------- checkpoints
    def save_checkpoint(
        self,
        path: str | os.PathLike,
        *,
        epoch: int | None = None,
        evaluated: bool = False,
        **extra: Any,
    ) -> None:
        """Weights, optimizer and schedule state, epoch and ``extra`` into one safetensors file;
        with ``ema`` also the moving average (``ema/…``). ``evaluated=True`` (``best.safetensors``)
        saves the weights that were evaluated as the model's: the moving average with ``ema``."""
        save_checkpoint(
            path,
            self.eval_model if evaluated else self.model,
            self.optimizer,
            self.scheduler,
            epoch=self.epoch if epoch is None else epoch,
            extra={
                "planned_epochs": self.planned_epochs,
                "start_epoch": self.start_epoch,
                **extra,
            },
            ema=None if evaluated else self.ema,
        )

    def _resume(self, run: rundir.RunDir, epochs: int, steps_per_epoch: int) -> None:
        info = load_checkpoint(run / rundir.LAST, self.model, self.optimizer, ema=self.ema)
        self.epoch = info["epoch"]
        self.history = run.read_metrics()[: self.epoch]
        self.steps = [row for row in run.read_steps() if row["epoch"] <= self.epoch]
        scheduler = self.scheduler
        assert scheduler is not None  # fit builds it before resuming
        same_plan = info["extra"].get("planned_epochs") == epochs
        if same_plan and info["scheduler"] is not None:
            scheduler.load_state_dict(info["scheduler"])
        else:
            # The run is extended or shortened: the schedule spans the new total, and is advanced
            # to where the completed epochs leave it (torch warns of steps without optimizer steps).
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                for _ in range((self.epoch - self.start_epoch) * steps_per_epoch):
                    scheduler.step()

    # ----------------------------------------------------------------------------- training
    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:  # channels_last is a layout of (N, C, H, W) batches only
            return x.to(self.device, non_blocking=True)
        return x.to(self.device, non_blocking=True, memory_format=self.precision.memory_format)

    def fit(
        self,
        train: Batches,
        valid: Iterable | None = None,
        *,
        epochs: int = 1,
        resume: bool = False,
        overwrite: bool = False,
    ) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are complete (counting those of a resumed run, and the
        ``start_epoch`` epochs before this trainer's).

        Returns the history: one dict per epoch with ``loss`` and the task's training metrics,
        ``val_loss`` and the task's validation metrics, ``lr``, ``images_per_s`` and ``seconds``.
        """
        train = self._shard(train)
        steps_per_epoch = len(train)
        if self.time_budget is not None and (
            self.scheduler is None or self.planned_epochs != epochs
        ):
            self.scheduler = TimeBudgetSchedule(self.optimizer, self.schedule, self.time_budget)
            self.planned_epochs = epochs
        elif self.scheduler is None or self.planned_epochs != epochs:
            self.scheduler = make_schedule(
                self.schedule,
                self.optimizer,
                total_steps=(epochs - self.start_epoch) * steps_per_epoch,
                steps_per_epoch=steps_per_epoch,
            )
            self.planned_epochs = epochs
        callbacks = list(self.callbacks)
        self.validating = valid is not None
        run = self.run
        if run is not None:
            if self.dist.is_main:
                run.create(resume=resume, overwrite=overwrite)
            distributed.barrier(self.dist)  # the folder exists before any process reads it
            # no checkpoint (killed in the first epoch): the run starts from the beginning
            if resume and run.has_checkpoint():
                self._resume(run, epochs, steps_per_epoch)
                self.resumed_from = self.checkpoint_epoch = self.epoch
        if run is not None and self._writes:
            batch_size = getattr(train, "batch_size", None)
            run.write_json(rundir.CONFIG, self.run_config(epochs, batch_size))
            callbacks.append(BestCheckpoint(str(run / rundir.BEST)))
        self.stop_training, self.stop_reason = False, None
        for cb in callbacks:
            cb.on_train_begin(self)
        try:
            while self.epoch < epochs and not self.stop_training:
                epoch = self.epoch
                for cb in callbacks:
                    cb.on_epoch_begin(self, epoch)
                logs = {"epoch": epoch + 1, **self._train_epoch(train, epoch, epochs)}
                if valid is not None and self._validates(epoch, epochs):
                    logs.update({f"val_{k}": v for k, v in self.evaluate(valid).items()})
                logs.update(self.log_extra)
                self.history.append(logs)
                self.epoch = epoch + 1
                if run is not None and self._writes:
                    run.write_metrics(self.history)
                    run.write_steps(self.steps)
                for cb in callbacks:
                    cb.on_epoch_end(self, epoch, logs)
                if run is not None and self._writes:
                    self.save_checkpoint(run / rundir.LAST)
                    self.checkpoint_epoch = self.epoch
        except RuntimeError as exc:
            if not self.dist.enabled or not distributed.is_peer_failure(exc):
                raise
            raise distributed.peer_error(exc, self.dist) from exc
        except KeyboardInterrupt:
            # Nothing is saved: last.safetensors holds the start of the unfinished epoch, which
            # --resume redoes exactly (see the module's docstring).
            self.stop_reason = "interrupted"
            raise
        for cb in callbacks:
            cb.on_train_end(self, self.history)
        return self.history

    def _validates(self, epoch: int, epochs: int) -> bool:
        """Whether epoch ``epoch`` (0-based) ends with validation: every ``val_every``-th epoch,
        and the run's last one (the epoch count reached, or the time budget spent in it)."""
        last = epoch + 1 >= epochs or self.stop_training
        return last or (self.val_every > 0 and (epoch + 1) % self.val_every == 0)

    @property
    def _writes(self) -> bool:
        """Whether this process writes the run directory (rank 0 of a DDP job, or the only one)."""
        return self.run is not None and self.dist.is_main

    def _shard(self, data: Any, *, training: bool = True) -> Any:
        """Under DDP, this process's share of ``data``: for training equal shares (every process
        runs the same number of steps), for evaluation every item exactly once over all processes."""
        if not self.dist.enabled:
            return data
        if hasattr(data, "shard"):
            return data.shard(self.dist.rank, self.dist.world_size, drop_last=training)
        if isinstance(data, torch.utils.data.DataLoader):
            if training:
                return distributed.shard_loader(data, self.dist, self.seed)
            return distributed.shard_eval_loader(data, self.dist)
        if not training:  # a plain list of batches: evaluated whole by every process
            return data
        raise ValueError(
            "train: under torchrun every process needs its own share of the data: pass "
            f"TensorBatches or a DataLoader (both sharded automatically), not {type(data).__name__}"
        )

    def _train_epoch(self, train: Batches, epoch: int, epochs: int) -> dict[str, float]:
        self.train_model.train()
        torch.manual_seed(self.seed * 1_000_003 + epoch)  # dropout masks reproduce on resume
        if hasattr(train, "set_epoch"):
            train.set_epoch(epoch)
        generator = getattr(train, "generator", None)
        if isinstance(generator, torch.Generator):
            # A DataLoader's own shuffle generator (cnnkit.data.folder.loader gives one) advances
            # across epochs, so a resumed run would see epoch 1's order again: seed it per epoch.
            generator.manual_seed(self.seed * 1_000_003 + epoch)
        sampler = getattr(train, "sampler", None)
        if isinstance(sampler, torch.utils.data.DistributedSampler):
            sampler.set_epoch(epoch)  # a new shuffle per epoch
        scheduler = self.scheduler
        assert scheduler is not None  # fit builds it
        metric = self.task.train_metrics()
        metric.reset()
        # the loss summed over images (over the epoch, and since the last logged step), images, and
        # (the last entry) whether a process has spent the time budget
        loss_sums = torch.zeros(5, dtype=torch.float64, device=self.device)
        totals = [0.0, 0.0, 0.0, 0.0, 0.0]  # over every process, as of the last host sync
        budget = scheduler if isinstance(scheduler, TimeBudgetSchedule) else None
        steps = len(train)
        start = time.perf_counter()
        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not self.progress,
            leave=True,
            dynamic_ncols=True,
        )
        skipped = 0
        for step, (x, y) in enumerate(train, 1):
            x, y = self._inputs(x), to_device(y, self.device)
            with self.precision.autocast():
                output = self.train_model(x)
            loss, _ = self.task.loss(output, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self._finite_step(loss, epoch, step):
                self.optimizer.step()
                scheduler.step()
                if self.ema is not None and step % self.ema_every == 0:
                    self.ema.update_parameters(self.model)
                n = x.shape[0]
                loss_sums[:4] += torch.stack(
                    [loss.detach().double() * n, loss.new_tensor(n).double()]
                ).repeat(2)
                metric.update(output, y)
            else:  # on_nonfinite="skip": no update, but the schedule keeps its pace
                skipped += 1
                self.optimizer.zero_grad(set_to_none=True)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                    scheduler.step()
            if step % self.log_every == 0 or step == steps:
                # One host sync every few steps: the logged loss, the progress bar, and the time
                # budget (every process stops at the same step: the flag is summed over them).
                if budget is not None:
                    loss_sums[4] = float(budget.exhausted())
                totals = self.reduce(loss_sums).tolist()
                loss_sums[2:] = 0  # the window since this log
                window = totals[2] / totals[3] if totals[3] else math.nan
                self.steps.append({"epoch": epoch + step / steps, "loss": window})
                shown = metric.compute(self.reduce)
                rate = totals[1] / (time.perf_counter() - start)
                bar.set_postfix(
                    loss=f"{totals[0] / totals[1]:.4f}",
                    **{
                        short: f"{shown[key]:.4f}"
                        for key, short in self.task.progress_keys.items()
                        if key in shown
                    },
                    img_s=f"{rate:.0f}",
                )
                bar.update(step - bar.n)
                if totals[4] > 0:
                    assert budget is not None
                    self.stop_training = True
                    self.stop_reason = (
                        f"time budget of {self._budget_text()} spent: stopped after {step} of "
                        f"{steps} steps of epoch {epoch + 1}"
                    )
                    break
        bar.close()
        seconds = time.perf_counter() - start
        # The last step always syncs, so totals cover the whole epoch (every process's share).
        skipped_batches = {"skipped_batches": skipped} if self.on_nonfinite == "skip" else {}
        return {
            "loss": totals[0] / totals[1] if totals[1] else math.nan,
            **metric.compute(self.reduce),
            **skipped_batches,
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": totals[1] / seconds,
            "seconds": seconds,
        }

    def _budget_text(self) -> str:
        assert self.time_budget is not None
        minutes, seconds = divmod(round(self.time_budget), 60)
        return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"

    def _finite_step(self, loss: torch.Tensor, epoch: int, step: int) -> bool:
        """Clip the gradients (with ``grad_clip``) and check that the loss and the gradients' norm
        are finite: ``True`` to go on with the update, ``False`` to skip the batch
        (``on_nonfinite="skip"``); ``stop`` raises :class:`NonFiniteLossError`. Under DDP every
        process decides alike (the flags are summed), so none waits for another's update."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.grad_clip is not None:
            norm = nn.utils.clip_grad_norm_(params, self.grad_clip)
        else:
            norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        loss = loss.detach().float()
        flags = torch.stack([~torch.isfinite(loss), ~torch.isfinite(norm)]).double()
        flags = self.reduce(flags)
        bad_loss, bad_grad = flags.tolist()  # the one host sync per step
        if not bad_loss and not bad_grad:
            return True
        if self.on_nonfinite == "skip":
            if self.dist.is_main:
                tqdm.write(
                    f"epoch {epoch + 1}, step {step}: non-finite "
                    f"{'loss' if bad_loss else 'gradients'}; batch skipped (--on-nonfinite skip)"
                )
            return False
        if not bad_loss:
            what = f"gradients' norm became {norm.item()}"
        elif math.isfinite(value := loss.item()):
            what = "loss became non-finite in another process"
        else:
            what = f"loss became {value}"
        raise NonFiniteLossError(
            f"{what} at epoch {epoch + 1}, step {step}; training stopped before that update and "
            "the last good checkpoint was kept. Try a lower learning rate, grad_clip, or "
            "--on-nonfinite skip."
        )

    # ----------------------------------------------------------------------------- inference
    def _batches(self, data: Iterable | torch.Tensor, batch_size: int) -> Iterable:
        if isinstance(data, torch.Tensor):
            return data.split(batch_size)
        return data

    @torch.no_grad()
    def _outputs(self, data: Iterable) -> Iterator[tuple[Any, Any]]:
        """``(raw model output, target or None)`` per batch, in inference mode: the task's
        ``infer`` (classification with ``tta="flip"`` averages each image with its mirror) on
        :attr:`eval_model`."""
        model = self.eval_model.eval()
        for batch in data:
            x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
            with self.precision.autocast():
                output = self.task.infer(model, self._inputs(x))
            yield output, to_device(y, self.device)

    def evaluate(self, data: Iterable, metric: StreamingMetric | None = None) -> dict[str, float]:
        """The task's evaluation metrics (``loss``, ``accuracy``… for classification) over labelled
        batches, streamed: each batch updates ``metric`` (default ``task.eval_metrics()``) on the
        device and is dropped. Under DDP every process evaluates its share and the sums are reduced."""
        metric = metric if metric is not None else self.task.eval_metrics()
        metric.reset()
        seen = False
        for output, target in self._outputs(self._shard(data, training=False)):
            if target is None:
                raise ValueError("evaluate: the data yields no targets")
            metric.update(output, target)
            seen = True
        if not seen and not self.dist.enabled:
            raise ValueError("evaluate: the data yields no batch")
        return metric.compute(self.reduce)

    def predict_batches(
        self, data: Iterable | torch.Tensor, batch_size: int = 256
    ) -> Iterator[Any]:
        """The task's decoded predictions, one batch at a time (nothing is kept)."""
        for output, _ in self._outputs(self._batches(data, batch_size)):
            yield self.task.decode(output)

    def predict(self, data: Iterable | torch.Tensor, batch_size: int = 256) -> Any:
        """Decoded predictions for batches, or for one tensor of images: for classification the
        class probabilities (N, num_classes)."""
        return _concat(
            [
                part.cpu() if isinstance(part, torch.Tensor) else part
                for part in self.predict_batches(data, batch_size)
            ]
        )
