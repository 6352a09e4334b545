"""The training loop: fit / evaluate / predict with checkpoints, schedules, callbacks and a progress bar.

Data is any iterable of ``(images, labels)`` batches with a ``len``: a ``cnnkit.data.TensorBatches``
for in-memory datasets, or a ``torch.utils.data.DataLoader``. Models may return logits, or in
training ``(logits, *aux_logits)`` (GoogLeNet's auxiliary classifiers), whose losses are added with
weight ``aux_loss_weight`` (0.3, Szegedy et al. 2014).
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnkit.device import default_precision, pick_device
from cnnkit.train import distributed, rundir
from cnnkit.train.callbacks import BestCheckpoint, Callback
from cnnkit.train.checkpoint import load_checkpoint, save_checkpoint
from cnnkit.train.metrics import topk_correct
from cnnkit.train.optim import make_optimizer, make_schedule


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before saving the bad weights."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _split_output(output: Any) -> tuple[torch.Tensor, Sequence[torch.Tensor]]:
    if isinstance(output, torch.Tensor):
        return output, ()
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0], tuple(output[1:])
    raise TypeError(
        f"model output: expected a tensor of logits or a tuple (logits, *aux), got {type(output).__name__}"
    )


class Trainer:
    """Train and evaluate a classifier.

        ``optimizer``: ``sgd`` (momentum 0.9), ``adam``, ``adamw``, ``nadam``; ``lr``/``weight_decay``/
        ``momentum`` left ``None`` keep that optimizer's default. ``schedule``: ``onecycle``, ``cosine``,
        ``step``, ``constant``. The loss is cross-entropy (with ``label_smoothing``; auxiliary outputs weighted
    ``aux_loss_weight``), or the model's own ``criterion(logits, target, label_smoothing=...)`` method
    where it has one (LeNet-5's RBF head). ``precision``: ``fp32`` or ``bf16`` (autocast); ``None`` picks bf16 on CUDA
        and fp32 on the CPU. With ``out_dir`` the run directory of :mod:`cnnkit.train.rundir` is written.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: str = "adamw",
        lr: float | None = None,
        weight_decay: float | None = None,
        momentum: float | None = None,
        schedule: str = "onecycle",
        label_smoothing: float = 0.0,
        aux_loss_weight: float = 0.3,
        grad_clip: float | None = None,
        device: str | torch.device | None = None,
        precision: str | None = None,
        channels_last: bool | None = None,
        callbacks: Iterable[Callback] = (),
        seed: int = 0,
        top_k: int = 5,
        out_dir: str | os.PathLike | None = None,
        config: dict[str, Any] | None = None,
        progress: bool = True,
        log_every: int = 10,
    ) -> None:
        self.device = pick_device(device)
        multi = distributed.world_size_from_env() > 1
        if multi and self.device.type == "cuda" and self.device.index is None:
            # one GPU per process under torchrun
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = distributed.setup(self.device)
        self.precision = default_precision(self.device, precision)
        if channels_last is not None:
            self.precision = type(self.precision)(self.device, self.precision.name, channels_last)
        self.model = model.to(self.device, memory_format=self.precision.memory_format)
        # What the training step calls: the model itself, or its DDP wrapper under torchrun. DDP
        # records which parameters train when it is built: after freezing or unfreezing layers,
        # build a new Trainer (fine_tune does).
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=device_ids
            )
        self.optimizer_name = optimizer
        self.optimizer_options = {"lr": lr, "weight_decay": weight_decay}
        if momentum is not None:
            self.optimizer_options["momentum"] = momentum
        self.optimizer = self.configure_optimizer()
        self.schedule = schedule
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.label_smoothing = label_smoothing
        # A model may carry its paper's loss (LeNet-5's RBF criterion); cross-entropy otherwise.
        self.criterion: Callable[..., torch.Tensor] = getattr(
            getattr(model, "module", model), "criterion", F.cross_entropy
        )
        self.aux_loss_weight = aux_loss_weight
        self.grad_clip = grad_clip
        self.callbacks = list(callbacks)
        self.seed = seed
        self.top_k = top_k
        self.run = rundir.RunDir(out_dir) if out_dir is not None else None
        self.config = dict(config or {})
        self.progress = progress and self.dist.is_main
        self.log_every = max(1, log_every)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # epochs completed
        self.planned_epochs: int | None = None  # the epochs the schedule spans
        self.stop_training = False
        self.stop_reason: str | None = None

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

    def _run_config(self, epochs: int, batch_size: int | None) -> dict[str, Any]:
        return {
            **self.config,
            "trainer": {
                "optimizer": self.optimizer_name,
                **{k: v for k, v in self.optimizer.defaults.items() if isinstance(v, (int, float))},
                "schedule": self.schedule,
                "epochs": epochs,
                "batch_size": batch_size,
                "label_smoothing": self.label_smoothing,
                "aux_loss_weight": self.aux_loss_weight,
                "grad_clip": self.grad_clip,
                "precision": self.precision.name,
                "channels_last": self.precision.channels_last,
                "device": str(self.device),
                "seed": self.seed,
            },
        }

    # ----------------------------------------------------------------------------- checkpoints
    def save_checkpoint(
        self, path: str | os.PathLike, *, epoch: int | None = None, **extra: Any
    ) -> None:
        """Weights, optimizer and schedule state, epoch and ``extra`` into one safetensors file."""
        save_checkpoint(
            path,
            self.model,
            self.optimizer,
            self.scheduler,
            epoch=self.epoch if epoch is None else epoch,
            extra={"planned_epochs": self.planned_epochs, **extra},
        )

    def load_checkpoint(self, path: str | os.PathLike) -> dict[str, Any]:
        """Restore a checkpoint written by :meth:`save_checkpoint` (model, optimizer, schedule, epoch)."""
        info = load_checkpoint(path, self.model, self.optimizer, self.scheduler)
        self.epoch = info["epoch"]
        return info

    def _resume(self, path: os.PathLike, epochs: int, steps_per_epoch: int) -> None:
        info = load_checkpoint(path, self.model, self.optimizer)
        self.epoch = info["epoch"]
        self.history = self.run.read_metrics()[: self.epoch]  # type: ignore[union-attr]
        if info["extra"].get("planned_epochs") == epochs and info["scheduler"] is not None:
            self.scheduler.load_state_dict(info["scheduler"])  # type: ignore[union-attr]
        else:
            # The run is extended or shortened: the schedule spans the new total, and is advanced
            # to where the completed epochs leave it (torch warns of steps without optimizer steps).
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                for _ in range(self.epoch * steps_per_epoch):
                    self.scheduler.step()  # type: ignore[union-attr]

    # ----------------------------------------------------------------------------- training
    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True, memory_format=self.precision.memory_format)
        return x, y.to(self.device, non_blocking=True)

    def _loss(self, output: Any, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, aux = _split_output(output)
        loss = self.criterion(logits.float(), y, label_smoothing=self.label_smoothing)
        for aux_logits in aux:
            loss = loss + self.aux_loss_weight * self.criterion(
                aux_logits.float(), y, label_smoothing=self.label_smoothing
            )
        return loss, logits

    def fit(
        self,
        train: Iterable,
        valid: Iterable | None = None,
        *,
        epochs: int = 1,
        resume: bool = False,
        overwrite: bool = False,
    ) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are complete (counting those of a resumed run).

        Returns the history: one dict per epoch with ``loss``, ``accuracy``, ``val_loss``,
        ``val_accuracy``, ``val_top{k}``, ``lr``, ``images_per_s`` and ``seconds``.
        """
        train = self._shard(train)
        steps_per_epoch = len(train)  # type: ignore[arg-type]
        if self.scheduler is None or self.planned_epochs != epochs:
            self.scheduler = make_schedule(
                self.schedule,
                self.optimizer,
                total_steps=epochs * steps_per_epoch,
                steps_per_epoch=steps_per_epoch,
            )
            self.planned_epochs = epochs
        callbacks = list(self.callbacks)
        if self.run is not None:
            if self.dist.is_main:
                self.run.create(resume=resume, overwrite=overwrite)
            if resume:
                self._resume(self.run / rundir.LAST, epochs, steps_per_epoch)
        if self._writes:
            batch_size = getattr(train, "batch_size", None)
            self.run.write_json(rundir.CONFIG, self._run_config(epochs, batch_size))  # type: ignore[union-attr]
            callbacks.append(BestCheckpoint(str(self.run / rundir.BEST)))  # type: ignore[operator]
            if resume:  # the best score so far must be beaten, not re-saved
                best = callbacks[-1]
                scores = [row.get("val_accuracy", row.get("accuracy")) for row in self.history]
                best.best = max([s for s in scores if s is not None], default=best.best)
        self.stop_training, self.stop_reason = False, None
        for cb in callbacks:
            cb.on_train_begin(self)
        try:
            while self.epoch < epochs and not self.stop_training:
                epoch = self.epoch
                for cb in callbacks:
                    cb.on_epoch_begin(self, epoch)
                logs = {"epoch": epoch + 1, **self._train_epoch(train, epoch, epochs)}
                if valid is not None:
                    logs.update({f"val_{k}": v for k, v in self.evaluate(valid).items()})
                self.history.append(logs)
                self.epoch = epoch + 1
                if self._writes:
                    self.run.write_metrics(self.history)  # type: ignore[union-attr]
                for cb in callbacks:
                    cb.on_epoch_end(self, epoch, logs)
                if self._writes:
                    self.save_checkpoint(self.run / rundir.LAST)  # type: ignore[operator]
        except KeyboardInterrupt:
            # Keep what was learnt: the weights mid-epoch go to the last checkpoint with the count
            # of completed epochs, so --resume redoes the interrupted epoch from these weights.
            if self._writes:
                self.save_checkpoint(self.run / rundir.LAST, interrupted=True)  # type: ignore[operator]
            self.stop_reason = "interrupted"
            raise
        for cb in callbacks:
            cb.on_train_end(self, self.history)
        return self.history

    @property
    def _writes(self) -> bool:
        """Whether this process writes the run directory (rank 0 of a DDP job, or the only one)."""
        return self.run is not None and self.dist.is_main

    def _shard(self, train: Iterable) -> Iterable:
        """Under DDP, this process's share of the training data."""
        if not self.dist.enabled:
            return train
        if hasattr(train, "shard"):
            return train.shard(self.dist.rank, self.dist.world_size)
        if isinstance(train, torch.utils.data.DataLoader):
            return distributed.shard_loader(train, self.dist, self.seed)
        raise ValueError(
            "train: under torchrun every process needs its own share of the data: pass "
            f"TensorBatches or a DataLoader (both sharded automatically), not {type(train).__name__}"
        )

    def _totals(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> list[float]:
        """[loss sum, correct, images] so far in this epoch, over every DDP process: one host sync."""
        if not self.dist.enabled:
            return [loss_sum.item(), correct.item(), seen]
        local = torch.stack(
            [loss_sum.double(), correct.double(), loss_sum.new_tensor(seen).double()]
        )
        return distributed.all_reduce_sum(local, self.dist).tolist()

    def _train_epoch(self, train: Iterable, epoch: int, epochs: int) -> dict[str, float]:
        self.train_model.train()
        torch.manual_seed(self.seed * 1_000_003 + epoch)  # dropout masks reproduce on resume
        if hasattr(train, "set_epoch"):
            train.set_epoch(epoch)
        if isinstance(getattr(train, "sampler", None), torch.utils.data.DistributedSampler):
            train.sampler.set_epoch(epoch)  # type: ignore[attr-defined]  # a new shuffle per epoch
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        totals = [0.0, 0, 0]  # over every process, as of the last host sync
        start = time.perf_counter()
        bar = tqdm(
            total=len(train),  # type: ignore[arg-type]
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not self.progress,
            leave=True,
            dynamic_ncols=True,
        )
        for step, (x, y) in enumerate(train, 1):
            x, y = self._to_device(x, y)
            with self.precision.autocast():
                output = self.train_model(x)
            loss, logits = self._loss(output, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
            self.scheduler.step()  # type: ignore[union-attr]
            total_loss += loss.detach() * len(y)
            correct += topk_correct(logits.detach(), y)
            seen += len(y)
            if step % self.log_every == 0 or step == len(train):  # type: ignore[arg-type]
                # One host sync every few steps: checks the loss and feeds the progress bar.
                totals = self._totals(total_loss, correct, seen)
                running = totals[0] / totals[2]
                if not math.isfinite(running):
                    raise NonFiniteLossError(
                        f"loss became {running} at epoch {epoch + 1}, step {step}; training stopped "
                        "and the last good checkpoint was kept. Try a lower learning rate or grad_clip."
                    )
                rate = totals[2] / (time.perf_counter() - start)
                bar.set_postfix(
                    loss=f"{running:.4f}", acc=f"{totals[1] / totals[2]:.4f}", img_s=f"{rate:.0f}"
                )
                bar.update(step - bar.n)
        bar.close()
        seconds = time.perf_counter() - start
        # The last step always syncs, so totals cover the whole epoch (every process's share).
        return {
            "loss": totals[0] / max(totals[2], 1),
            "accuracy": totals[1] / max(totals[2], 1),
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": totals[2] / seconds,
            "seconds": seconds,
        }

    # ----------------------------------------------------------------------------- inference
    @torch.no_grad()
    def _logits(self, data: Iterable) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.model.eval()
        all_logits, all_labels = [], []
        for batch in data:
            x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
            x = x.to(self.device, non_blocking=True, memory_format=self.precision.memory_format)
            with self.precision.autocast():
                logits, _ = _split_output(self.model(x))
            all_logits.append(logits.float().cpu())
            if y is not None:
                all_labels.append(y.cpu())
        labels = torch.cat(all_labels) if all_labels else None
        return torch.cat(all_logits), labels

    def evaluate(self, data: Iterable) -> dict[str, float]:
        """``loss``, ``accuracy`` and ``top{k}`` accuracy over labelled batches."""
        logits, labels = self._logits(data)
        if labels is None:
            raise ValueError("evaluate: the data yields no labels")
        return {
            "loss": self.criterion(logits, labels).item(),  # the training loss, unsmoothed
            "accuracy": topk_correct(logits, labels).item() / len(labels),
            f"top{self.top_k}": topk_correct(logits, labels, self.top_k).item() / len(labels),
        }

    def predict(self, data: Iterable | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities (N, num_classes) for batches, or for one tensor of images."""
        if isinstance(data, torch.Tensor):
            data = data.split(batch_size)
        logits, _ = self._logits(data)
        return logits.softmax(1)
