"""The ``Task`` interface: everything that differs between classification, localization, detection,
segmentation and super-resolution, so that one ``Trainer``, one CLI and one run directory serve them all.

A task owns (the ``Trainer`` owns none of this):

- ``build_model``: the registered model with the head the dataset needs;
- ``collate``: how a ``DataLoader`` stacks its items' targets (tensors, dicts of tensors, lists);
- ``loss(output, target) -> (total, parts)``: the training loss and its named parts;
- ``train_metrics()`` / ``eval_metrics()``: *streaming* metrics, updated per batch on the device and
  computed at the end, summed over processes under DDP, so host memory never depends on the size of
  the evaluation set;
- ``decode(output)``: what the model's raw output means (probabilities, boxes, masks, images);
- ``monitor``: the validation metric that ``BestCheckpoint``, ``EarlyStopping`` and ``--resume``
  watch, with ``monitor_mode`` ``"max"`` or ``"min"``;
- ``report``: the test-set report and its plots in the run directory;
- ``format_prediction``: how ``cnnkit predict`` prints one image's prediction.

A new task is one module: subclass :class:`Task`, decorate it with
:func:`cnnkit.tasks.register_task`, and ``cnnkit train --task NAME`` trains it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.utils.data import default_collate

if TYPE_CHECKING:
    from cnnkit.data.datasets import DataMeta, ImageData

Reduce = Callable[[torch.Tensor], torch.Tensor]


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class StreamingMetric(ABC):
    """A metric accumulated batch by batch.

    ``update`` runs on the device without a host sync; ``compute(reduce)`` syncs once: ``reduce`` sums
    the state over every DDP process (the trainer passes its all-reduce; alone, the identity).
    """

    @abstractmethod
    def reset(self) -> None: ...

    @abstractmethod
    def update(self, output: Any, target: Any) -> None: ...

    @abstractmethod
    def compute(self, reduce: Reduce = _identity) -> dict[str, float]: ...


class SumMetric(StreamingMetric):
    """A metric whose state is a few running sums (a count of images, of correct answers, a loss sum…)
    kept in one float64 tensor on the device: ``add`` accumulates, ``summarize`` turns the totals
    (summed over processes) into the metric values."""

    names: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._sums: torch.Tensor | None = None

    def reset(self) -> None:
        self._sums = None

    def add(self, **values: torch.Tensor | float) -> None:
        """Add to the named sums (every name in ``names`` must be given)."""
        if set(values) != set(self.names):
            raise ValueError(
                f"{type(self).__name__}.add: expected {self.names}, got {sorted(values)}"
            )
        device = next((v.device for v in values.values() if isinstance(v, torch.Tensor)), None)
        row = torch.stack(
            [torch.as_tensor(values[n], device=device).detach().double().sum() for n in self.names]
        )
        self._sums = row if self._sums is None else self._sums + row

    def totals(self, reduce: Reduce = _identity) -> dict[str, float]:
        """The sums over every process (zeros before the first ``add``)."""
        sums = self._sums if self._sums is not None else torch.zeros(len(self.names)).double()
        sums = reduce(sums)  # a collective under DDP: every process calls it, seen images or not
        return dict(zip(self.names, sums.tolist(), strict=True))

    def compute(self, reduce: Reduce = _identity) -> dict[str, float]:
        return self.summarize(self.totals(reduce))

    @abstractmethod
    def summarize(self, totals: dict[str, float]) -> dict[str, float]: ...


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format of a batch ``x``: channels-last where it is (what training feeds), else
    contiguous — for test-time views, each made dense in the input's own layout."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN for an empty denominator (no image seen)."""
    return numerator / denominator if denominator else math.nan


class Task(ABC):
    """One kind of problem a CNN solves. Subclasses set ``name``, ``monitor`` and the methods below.

    ``options()`` returns the constructor arguments, recorded in ``config.json`` so that
    ``cnnkit evaluate``/``predict``/``--resume`` rebuild the same task.
    """

    name: ClassVar[str]
    monitor: ClassVar[str] = "val_loss"
    monitor_mode: ClassVar[str] = "min"
    #: the registry's output contract of the models this task trains (``ModelInfo.task``)
    model_task: ClassVar[str] = "classify"
    #: the keys of a training row to print in the progress bar, with their short names
    progress_keys: ClassVar[dict[str, str]] = {}

    def options(self) -> dict[str, Any]:
        """The options this task was built with (JSON), for ``config.json``."""
        return {}

    def setup(self, model: nn.Module) -> None:  # noqa: B027  # an optional hook
        """Called by the ``Trainer`` with the model it trains (a task may use the model's own loss)."""

    # ---- model and data
    def build_model(self, name: str, meta: DataMeta, **options: Any) -> nn.Module:
        """The registered model ``name`` with the head this task needs for the dataset ``meta``."""
        from cnnkit.models import create_model

        return create_model(
            name, num_classes=len(meta.class_names), in_channels=meta.input_size[0], **options
        )

    def data_options(self, model: str, options: dict[str, Any]) -> dict[str, Any]:
        """Data options the model decides, given to ``load_data`` (super-resolution: the data's
        low-resolution images are made at the model's ``scale``); ``--data-option`` overrides them."""
        return {}

    def model_options_from_data(
        self, data: ImageData, model: str | None = None, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Model options the training data decides for the registered model ``model`` (detection:
        anchors by K-Means on the training boxes; segmentation: the class frequencies, for models
        that take ``class_prior``; classification: the patch covariance of a whitening stem the
        user's ``options`` ask for), recorded with the model's options so that ``create_model``
        rebuilds the same model; ``--model-option`` overrides them."""
        return {}

    def model_spec(self, name: str, meta: DataMeta, options: dict[str, Any]) -> dict[str, Any]:
        """What ``config.json`` records as ``model``, so that ``create_model(spec["name"],
        num_classes=…, in_channels=…, **spec["options"])`` rebuilds what :meth:`build_model` built
        (a task that wraps the named model, as localization does, records the wrapper)."""
        return {
            "name": name,
            "num_classes": len(meta.class_names),
            "in_channels": meta.input_size[0],
            "options": options,
        }

    def collate(self, batch: Sequence[Any]) -> Any:
        """Stack a ``DataLoader``'s ``(image, target)`` items into one batch."""
        return default_collate(list(batch))

    # ---- training
    @abstractmethod
    def loss(self, output: Any, target: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss (a 0-dim tensor) and its named parts."""

    @abstractmethod
    def train_metrics(self) -> StreamingMetric:
        """Metrics of the training batches (cheap: computed on the outputs the step already has)."""

    @abstractmethod
    def eval_metrics(self) -> StreamingMetric:
        """Metrics of a validation or test pass; must include ``loss``."""

    # ---- inference
    def infer(self, model: nn.Module, x: torch.Tensor) -> Any:
        """The raw output the trainer evaluates and predicts with (in ``eval`` mode, no gradient):
        ``model(x)``; classification with test-time augmentation averages the image and its mirror."""
        return model(x)

    @abstractmethod
    def decode(self, output: Any) -> Any:
        """The model's raw inference output → what it means (probabilities, boxes, masks…)."""

    def format_prediction(
        self, decoded: Any, class_names: Sequence[str], top: int = 3
    ) -> list[str]:
        """Lines ``cnnkit predict`` prints for one image's decoded prediction."""
        return [str(decoded)]

    #: whether :meth:`draw_prediction` draws (``cnnkit predict --out``)
    draws_predictions: ClassVar[bool] = False

    def draw_prediction(
        self, image: torch.Tensor, decoded: Any, class_names: Sequence[str]
    ) -> torch.Tensor:
        """``image`` (uint8 (C, H, W)) with the prediction drawn, uint8 (3, H', W'); tasks that
        draw set ``draws_predictions``."""
        raise NotImplementedError(f"the {self.name} task draws no predictions")

    # ---- the end of a run
    def report(
        self, trainer: Any, test: Any, meta: DataMeta, run_dir: Path | None
    ) -> dict[str, Any]:
        """Test-set metrics (``test_…`` keys), and the task's plots written into ``run_dir``."""
        return {f"test_{k}": v for k, v in trainer.evaluate(test).items()}

    def print_report(self, metrics: dict[str, Any], meta: DataMeta) -> None:
        """Print the test report that ``report`` returned."""
        for key, value in metrics.items():
            if isinstance(value, float):
                print(f"  {key:<20s} {value:.4f}")

    def history_metric(self) -> str:
        """The metric the history plot shows beside the loss (without ``val_``)."""
        return self.monitor.removeprefix("val_")
