"""Segmentation metrics from a confusion matrix: pure tensor functions, no host copies.

Convention (scikit-learn's ``confusion_matrix`` and Keras' ``MeanIoU``): ``matrix[i, j]`` counts the
pixels of true class i predicted as class j; rows are targets, columns predictions.

- pixel accuracy = trace / total;
- IoU of class c = TP / (TP + FP + FN) = matrix[c, c] / (row sum + column sum - matrix[c, c]),
  NaN for a class absent from both targets and predictions (0 / 0);
- mean IoU = the mean over the classes whose IoU is defined, as Keras' ``MeanIoU`` (its docs: "IOU
  is defined as follows: IOU = true_positive / (true_positive + false_positive + false_negative)",
  averaged over the classes with a non-zero denominator).

Pixels whose target is ``ignore_index`` (VOC's 255 for object borders) are left out entirely, as
Keras' ``ignore_class`` does.

``ConfusionMatrix`` accumulates on the device of its data; its whole state is the int64 tensor
``matrix``, so under several processes ``torch.distributed.all_reduce(cm.matrix)`` (a sum) gives the
matrix of the whole evaluation set.
"""

from __future__ import annotations

import torch


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts of (target, prediction) pairs.

    ``pred`` and ``target`` are integer labels of the same shape (e.g. (N, H, W)); pixels whose
    target is ``ignore_index`` are not counted. A label outside [0, num_classes) is a ``ValueError``
    naming the map and the labels found (checking costs a host synchronisation per map).
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"confusion_matrix: prediction shape {tuple(pred.shape)} differs from target shape "
            f"{tuple(target.shape)}; expected the same (labels, not logits)"
        )
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for labels, role in ((target, "target"), (pred, "prediction")):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.numel():  # one host synchronisation per map
            allowed = "" if ignore_index is None or role == "prediction" else f" or {ignore_index}"
            raise ValueError(
                f"confusion_matrix: {role} labels from {int(bad.min())} to {int(bad.max())} "
                f"outside the classes; expected 0 to {num_classes - 1}{allowed}"
            )
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def _as_float(matrix: torch.Tensor) -> torch.Tensor:
    # float64 keeps counts exact up to 2**53; MPS has no float64, so float32 there (exact to 2**24)
    return matrix.to(torch.float32 if matrix.device.type == "mps" else torch.float64)


def per_class_iou(matrix: torch.Tensor) -> torch.Tensor:
    """IoU of each class (float64), NaN for a class absent from both targets and predictions."""
    matrix = _as_float(matrix)
    true_positive = matrix.diagonal()
    union = matrix.sum(0) + matrix.sum(1) - true_positive
    return true_positive / union  # 0 / 0 = NaN where the class never occurs


def mean_iou_from_matrix(matrix: torch.Tensor) -> torch.Tensor:
    """Mean IoU over the classes present in targets or predictions (Keras' ``MeanIoU``); a 0-dim
    float64 tensor, NaN when the matrix is empty."""
    return per_class_iou(matrix).nanmean()


def pixel_accuracy(matrix: torch.Tensor) -> torch.Tensor:
    """Correct pixels / counted pixels, a 0-dim float64 tensor (NaN when nothing was counted)."""
    matrix = _as_float(matrix)
    return matrix.diagonal().sum() / matrix.sum()


def mean_iou(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """Mean IoU of label maps ``pred`` and ``target`` (same shape), Keras' ``MeanIoU`` with
    ``ignore_class=ignore_index``: classes absent from both are left out of the mean."""
    return mean_iou_from_matrix(confusion_matrix(pred, target, num_classes, ignore_index))


class ConfusionMatrix:
    """A streaming confusion matrix: ``update`` per batch on the device, ``compute`` at the end.

    The state is ``matrix``, (num_classes, num_classes) int64 on ``device``; sum it across processes
    to combine shards. ``update`` takes label maps, or logits (N, K, ...) which it turns into labels
    with ``argmax(1)``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"ConfusionMatrix: num_classes={num_classes}; expected at least 1")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count a batch: ``pred`` labels shaped as ``target``, or logits with classes on dim 1."""
        if pred.is_floating_point() and pred.dim() == target.dim() + 1:
            pred = pred.argmax(1)
        self.matrix += confusion_matrix(
            pred.to(self.matrix.device),
            target.to(self.matrix.device),
            self.num_classes,
            self.ignore_index,
        )

    def reset(self) -> None:
        self.matrix.zero_()

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"pixel_accuracy", "mean_iou", "iou"}``: two 0-dim tensors and the per-class IoU
        (NaN for classes absent from targets and predictions), all float64 (float32 on MPS) on the
        matrix's device."""
        return {
            "pixel_accuracy": pixel_accuracy(self.matrix),
            "mean_iou": mean_iou_from_matrix(self.matrix),
            "iou": per_class_iou(self.matrix),
        }
