"""TensorBoard event files for a training run (``cnnkit train --tensorboard``).

:class:`TensorBoardLogger` is a trainer callback (``cnnkit.train.callbacks.Callback``), so the
trainer needs no change: after each epoch it writes, with ``torch.utils.tensorboard.SummaryWriter``
into ``RUN/tensorboard/`` (``tensorboard --logdir runs`` shows every run):

- every number of the epoch's row: ``loss/train``, ``loss/val``, ``accuracy/train``,
  ``accuracy/val``… (a metric's training and validation values share a chart), ``lr``,
  ``speed/images_per_s``, ``speed/seconds``;
- a histogram of every parameter tensor (``weights/NAME``);
- a few validation images with the prediction drawn by the task's view (``predictions``);
- once, the model graph (traced on one sample image in eval mode).

Event files are appended to as training goes (TensorBoard reads them live), so unlike every other
file of a run they are not written atomically. Under torchrun only rank 0 writes. Fine-tuning's two
phases are two trainers with the same logger: the writer reopens for phase 2 (a second event file
in the same folder, steps continuing).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cnnkit.train.callbacks import Callback

if TYPE_CHECKING:
    from cnnkit.data.datasets import DataMeta
    from cnnkit.train.trainer import Trainer

#: the folder of a run directory that holds the event files
EVENTS_DIR = "tensorboard"


def scalar_tag(key: str) -> str:
    """An epoch row's key → its TensorBoard tag: ``val_accuracy`` → ``accuracy/val``,
    ``loss`` → ``loss/train``, ``lr`` → ``lr``, ``images_per_s`` → ``speed/images_per_s``."""
    if key == "lr":
        return "lr"
    if key in ("images_per_s", "seconds"):
        return f"speed/{key}"
    if key.startswith("val_"):
        return f"{key.removeprefix('val_')}/val"
    return f"{key}/train"


class TensorBoardLogger(Callback):
    """Write a run's TensorBoard events into ``log_dir``.

    ``sample``: a few normalized images (N, C, H, W) of the validation split, drawn with their
    predictions each epoch and used to trace the graph; ``meta`` gives their display and the class
    names. Without ``sample`` only scalars and histograms are written.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        sample: torch.Tensor | None = None,
        meta: DataMeta | None = None,
        histograms: bool = True,
        graph: bool = True,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.sample = sample
        self.meta = meta
        self.histograms = histograms
        self.graph = graph
        self.writer: Any = None
        self._graph_written = False

    def _open(self) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.log_dir))
        return self.writer

    def on_train_begin(self, trainer: Trainer) -> None:
        from cnnkit.deploy.views import GraphOutputs, get_view
        from cnnkit.train.distributed import is_main_process

        if not is_main_process():
            return
        writer = self._open()
        if self.graph and self.sample is not None and not self._graph_written:
            model = trainer.model
            was_training = model.training
            model.eval()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the tracer's warnings on Python control flow
                    # as the task's view exports it: a localizer's dict as a tuple of tensors
                    graph = GraphOutputs(model, get_view(trainer.task.name)).eval()
                    writer.add_graph(graph, self.sample[:1].to(trainer.device))
                self._graph_written = True
            except Exception as exc:  # some models cannot be traced; the rest of the log can
                warnings.warn(f"tensorboard: the model graph was not written ({exc})", stacklevel=2)
            finally:
                model.train(was_training)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = epoch + 1
        for key, value in logs.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(scalar_tag(key), value, step)
        if self.histograms:
            for name, param in trainer.model.named_parameters():
                self.writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)
        if self.sample is not None and self.meta is not None:
            self.writer.add_images("predictions", self.draw(trainer), step, dataformats="NCHW")
        self.writer.flush()

    def draw(self, trainer: Trainer) -> torch.Tensor:
        """The sample images with the model's current predictions drawn (uint8 (N, 3, H, W))."""
        from cnnkit.deploy.views import get_view, to_uint8_rgb

        assert self.sample is not None and self.meta is not None
        decoded = trainer.predict(self.sample)
        images = to_uint8_rgb(self.meta.to_display(self.sample))
        return get_view(trainer.task.name).draw(images, decoded, self.meta.class_names)

    def on_train_end(self, trainer: Trainer, history: list[dict[str, Any]]) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
