"""Semantic segmentation: one class per pixel (the notes' last section; Long et al. 2015, FCN).

Model-output contract: logits (N, K, H, W) at the input size (``fcn32s``/``fcn16s``/``fcn8s``,
``deeplab``, ``unet``). Targets: int64 label maps (N, H, W) in [0, K), ``ignore_index`` (255, VOC's
border label) for pixels that count in neither loss nor metrics. Decoded: label maps (N, H, W).

Losses (``cnnkit.losses``): ``ce`` pixel-wise cross-entropy, ``dice`` soft Dice (Milletari et al.
2016), ``ce+dice`` their sum. Metrics (``cnnkit.metrics``): pixel accuracy, per-class IoU and mean
IoU (Keras ``MeanIoU``: the mean over the classes present in targets or predictions) from one
confusion matrix summed over batches and, under DDP, over processes, so the streamed result equals
``mean_iou`` over the whole set.

Test-time augmentation (``tta``), at validation, test and prediction: the output is the log of the
mean of the per-pixel softmaxes of several views, each brought back to the input's pixels — so
decoding, the metrics and the loss need no other change (as ``Classify(tta=…)``). ``"flip"``: the
image and its mirror (the mirror's output mirrored back); ``"flip-scale"``: both, and both again
enlarged by :data:`TTA_SCALES` (bilinear, the logits resized back to the input size bilinearly),
four passes. Enlarging helps because the small items are the ones a stride-32 backbone names worst:
on the Fashion-MNIST scenes a 30-minute ``fcn8s`` scored validation mIoU 0.663 plain, 0.669 with
the mirror, 0.688 with ``flip-scale``, 0.689 with scales 1, 1.25 and 1.5 (six passes), and 0.615 at
1.5 alone (docs/notes/issue-13.md): the views vote, none is better alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.losses import (
    VOC_IGNORE_INDEX,
    cross_entropy_dice_loss,
    pixel_cross_entropy,
    soft_dice_loss,
)
from cnnkit.metrics import ConfusionMatrix, mean_iou_from_matrix, per_class_iou, pixel_accuracy
from cnnkit.tasks.base import Reduce, StreamingMetric, Task, _identity, layout_of
from cnnkit.tasks.registry import register_task

if TYPE_CHECKING:
    from cnnkit.data.datasets import DataMeta, ImageData

LossFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
#: the ``loss`` option → the loss of ``cnnkit.losses``
LOSSES: dict[str, LossFn] = {
    "ce": pixel_cross_entropy,
    "dice": soft_dice_loss,
    "ce+dice": cross_entropy_dice_loss,
}
#: test images drawn in the report's figure
REPORT_IMAGES = 8
#: test-time augmentations ``Segment(tta=…)`` takes
TTA_CHOICES = ("flip", "flip-scale")
#: ``flip-scale``: the scales of its views, each also mirrored
TTA_SCALES = (1.0, 1.25)


def logits_of(output: Any, target: torch.Tensor | None = None) -> torch.Tensor:
    """The model output as float logits (N, K, H, W), checked against label maps ``target``."""
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"segment: the model returned {type(output).__name__}; expected a tensor of logits "
            "(N, num_classes, H, W)"
        )
    if output.dim() != 4 or (
        target is not None
        and (target.dim() != 3 or output.shape[:1] + output.shape[2:] != target.shape)
    ):
        shown = "" if target is None else f" and the targets {tuple(target.shape)}"
        raise ValueError(
            f"segment: the model's output has shape {tuple(output.shape)}{shown}; expected logits "
            "(N, num_classes, H, W) and label maps (N, H, W) of the same H and W"
        )
    return output.float()


class SegmentationMetrics(StreamingMetric):
    """Loss, pixel accuracy and mean IoU from a streaming ``ConfusionMatrix``.

    State: the confusion matrix (int64) and two float64 sums (the loss weighted by counted pixels,
    the counted pixels); ``compute(reduce)`` sums both over processes. The loss is the mean over
    every counted pixel for ``ce`` (exact: each batch's mean times its pixels); for ``dice``, a
    batch-level quantity, it is the batches' losses weighted by their counted pixels.

    ``check_labels=False`` (training batches) skips ``ConfusionMatrix``'s label check, which costs a
    host synchronisation per batch, and counts with ``index_add_`` on the fixed-size matrix instead
    (the data sources check labels when they load them).
    """

    def __init__(
        self,
        num_classes: int | None,
        ignore_index: int = VOC_IGNORE_INDEX,
        loss_fn: LossFn | None = None,
        check_labels: bool = True,
        device: torch.device | None = None,
    ) -> None:
        self.num_classes, self.ignore_index, self.device = num_classes, ignore_index, device
        self.loss_fn, self.check_labels = loss_fn, check_labels
        self._confusion: ConfusionMatrix | None = None
        self._sums: torch.Tensor | None = None

    def reset(self) -> None:
        self._confusion, self._sums = None, None

    def _matrix_of(self, device: torch.device, num_classes: int) -> ConfusionMatrix:
        if self._confusion is None:
            self._confusion = ConfusionMatrix(num_classes, self.ignore_index, device)
            self.device = device
        return self._confusion

    def update(self, output: Any, target: torch.Tensor) -> None:
        logits = logits_of(output, target).detach()
        confusion = self._matrix_of(logits.device, logits.shape[1])
        if self.check_labels:
            confusion.update(logits, target)
        else:
            k = confusion.num_classes
            valid = target != self.ignore_index
            index = target.where(valid, 0) * k + logits.argmax(1)
            confusion.matrix.view(-1).index_add_(0, index.reshape(-1), valid.reshape(-1).long())
        if self.loss_fn is not None:
            pixels = (target != self.ignore_index).sum().double()
            row = torch.stack(
                [self.loss_fn(logits, target, self.ignore_index).double() * pixels, pixels]
            )
            self._sums = row if self._sums is None else self._sums + row

    def matrix(self, reduce: Reduce = _identity) -> torch.Tensor:
        """The (K, K) confusion matrix over every process (rows true classes), on the CPU."""
        if self._confusion is not None:
            matrix = self._confusion.matrix
        elif self.num_classes is not None:  # this process saw no batch; the others may have
            k = self.num_classes
            matrix = torch.zeros(k, k, dtype=torch.long, device=self.device)
        else:
            raise ValueError("SegmentationMetrics: no batch was seen and num_classes is unknown")
        return reduce(matrix).cpu()

    def compute(self, reduce: Reduce = _identity) -> dict[str, float]:
        matrix = self.matrix(reduce)
        scores = {
            "pixel_accuracy": float(pixel_accuracy(matrix)),
            "mean_iou": float(mean_iou_from_matrix(matrix)),
        }
        if self.loss_fn is not None:
            sums = self._sums
            if sums is None:
                sums = torch.zeros(2, dtype=torch.float64, device=self.device)
            loss_sum, pixels = reduce(sums).tolist()
            scores = {"loss": loss_sum / pixels if pixels else math.nan, **scores}
        return scores


@register_task
class Segment(Task):
    """Semantic segmentation with ``loss`` ``"ce"``, ``"dice"`` or ``"ce+dice"``; pixels labelled
    ``ignore_index`` take no part. Monitors the validation mean IoU. ``tta``: ``"flip"`` or
    ``"flip-scale"`` (see the module's docstring)."""

    name = "segment"
    model_task = "segment"
    monitor = "val_mean_iou"
    monitor_mode = "max"
    progress_keys: ClassVar[dict[str, str]] = {"mean_iou": "miou"}

    def __init__(
        self, loss: str = "ce", ignore_index: int = VOC_IGNORE_INDEX, tta: str | None = None
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {loss!r}")
        if tta is not None and tta not in TTA_CHOICES:
            raise ValueError(f"tta: expected one of {', '.join(TTA_CHOICES)} or none, got {tta!r}")
        self.loss_name, self.ignore_index, self.tta = loss, int(ignore_index), tta
        self.loss_fn = LOSSES[loss]
        # the model's number of classes and device (from ``setup``): under DDP a process that sees
        # no evaluation batch still joins the all-reduce with a zero matrix of the right size
        self.num_classes: int | None = None
        self.device: torch.device | None = None

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"loss": self.loss_name, "ignore_index": self.ignore_index}
        return {**options, "tta": self.tta} if self.tta else options

    def model_options_from_data(
        self, data: ImageData, model: str | None = None, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``class_prior``, each class's share of the labelled training pixels (rounded to 1e-6),
        for a model whose builder takes it (``unet``: its head's biases start at the log)."""
        from cnnkit.models import model_info

        if model is None or "class_prior" not in model_info(model).parameters:
            return {}
        num_classes = len(data.meta.class_names)
        counts = torch.zeros(num_classes, dtype=torch.float64)
        _, masks = data.train
        for start in range(0, len(masks), 256):  # 256 masks at a time: 34 MB of int64 at 128x128
            chunk = masks[start : start + 256]
            labels = torch.cat([m.flatten() for m in chunk]) if isinstance(chunk, list) else chunk
            histogram = torch.bincount(labels.flatten().long(), minlength=num_classes)
            counts += histogram[:num_classes]  # ignore_index (255) and beyond left out
        if 0 <= self.ignore_index < num_classes:
            counts[self.ignore_index] = 0
        if counts.sum() == 0:
            raise ValueError(f"{data.name}: the training masks have no labelled pixel")
        return {"class_prior": [round(float(c), 6) for c in counts / counts.sum()]}

    def setup(self, model: nn.Module) -> None:
        num_classes = getattr(getattr(model, "module", model), "num_classes", None)
        self.num_classes = int(num_classes) if isinstance(num_classes, int) else None
        self.device = next((p.device for p in model.parameters()), None)

    def loss(
        self, output: Any, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = logits_of(output, target)
        parts: dict[str, torch.Tensor] = {}
        if self.loss_name in ("ce", "ce+dice"):
            parts["cross_entropy"] = pixel_cross_entropy(logits, target, self.ignore_index)
        if self.loss_name in ("dice", "ce+dice"):
            parts["dice"] = soft_dice_loss(logits, target, self.ignore_index)
        total = sum(parts.values(), torch.zeros((), device=logits.device))
        return total, parts

    def infer(self, model: nn.Module, x: torch.Tensor) -> Any:
        if self.tta is None:
            return model(x)
        (h, w), scales = x.shape[-2:], TTA_SCALES if self.tta == "flip-scale" else (1.0,)
        # the resized views are new tensors, made dense in the input's layout
        memory_format = layout_of(x)
        log_probs = []
        for scale in scales:
            size = (round(h * scale), round(w * scale))
            view = (
                x
                if size == (h, w)
                else F.interpolate(x, size, mode="bilinear", align_corners=False)
            )
            for mirrored in (False, True):
                v = (view.flip(-1) if mirrored else view).contiguous(memory_format=memory_format)
                logits = logits_of(model(v))
                logits = logits.flip(-1) if mirrored else logits
                if logits.shape[-2:] != (h, w):
                    logits = F.interpolate(logits, (h, w), mode="bilinear", align_corners=False)
                log_probs.append(logits.log_softmax(1))
        # the mean of the softmaxes, as log-probabilities (logits whose softmax is it)
        return torch.logsumexp(torch.stack(log_probs), 0) - math.log(len(log_probs))

    def train_metrics(self) -> SegmentationMetrics:
        return SegmentationMetrics(
            self.num_classes, self.ignore_index, check_labels=False, device=self.device
        )

    def eval_metrics(self) -> SegmentationMetrics:
        return SegmentationMetrics(
            self.num_classes, self.ignore_index, self.loss_fn, device=self.device
        )

    def decode(self, output: Any) -> torch.Tensor:
        """Label maps (N, H, W), int64: the most likely class of each pixel."""
        return logits_of(output).argmax(1)

    def format_prediction(
        self, decoded: torch.Tensor, class_names: Sequence[str], top: int = 3
    ) -> list[str]:
        """The ``top`` classes covering most pixels, with their share of the image."""
        counts = torch.bincount(decoded.reshape(-1), minlength=len(class_names))
        shares = counts.double() / max(decoded.numel(), 1)
        order = shares.argsort(descending=True)[:top]
        return [
            f"{class_names[k]:<14s} {shares[k].item():7.2%} of pixels"
            for k in order.tolist()
            if counts[k] > 0
        ]

    def history_metric(self) -> str:
        return "mean_iou"

    def report(
        self, trainer: Any, test: Any, meta: DataMeta, run_dir: Path | None
    ) -> dict[str, Any]:
        """Test loss, pixel accuracy, mean IoU and the IoU of each class (``None`` for a class in
        neither targets nor predictions); with ``run_dir`` a figure of the first test images with
        their predicted and true masks (``rundir.SEGMENTATION_PLOT``)."""
        names = list(meta.class_names)
        metric = SegmentationMetrics(
            len(names), self.ignore_index, self.loss_fn, device=trainer.device
        )
        scores = trainer.evaluate(test, metric=metric)
        iou = per_class_iou(metric.matrix(trainer.reduce)).tolist()
        metrics: dict[str, Any] = {f"test_{k}": v for k, v in scores.items()}
        metrics["per_class_iou"] = {
            name: None if math.isnan(value) else value
            for name, value in zip(names, iou, strict=True)
        }
        if run_dir is not None:
            from cnnkit.train import rundir
            from cnnkit.viz.segmentation import plot_segmentations

            x, y = next(iter(test))
            x, y = x[:REPORT_IMAGES], y[:REPORT_IMAGES]
            predicted = trainer.predict(x)
            plot_segmentations(
                meta.to_display(x), predicted, y.cpu(), names, run_dir / rundir.SEGMENTATION_PLOT,
                ignore_index=self.ignore_index,
            )  # fmt: skip
        return metrics

    def print_report(self, metrics: dict[str, Any], meta: DataMeta) -> None:
        print(
            f"  loss            {metrics['test_loss']:.4f}\n"
            f"  pixel accuracy  {metrics['test_pixel_accuracy']:.2%}\n"
            f"  mean IoU        {metrics['test_mean_iou']:.4f}\n"
        )
        names = list(metrics["per_class_iou"])
        width = max(len("class"), *(len(n) for n in names))
        print(f"  {'class':<{width}}  IoU")
        for name, iou in metrics["per_class_iou"].items():
            shown = "   -   (absent)" if iou is None else f"{iou:.4f}"
            print(f"  {name:<{width}}  {shown}")
