"""Classification metrics computed on whole batches."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Number of samples whose label is among the ``k`` highest scores (a 0-dim tensor)."""
    k = min(k, logits.shape[1])
    if k == 1:
        return (logits.argmax(1) == labels).sum()
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(1).sum()


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts; rows are true classes, columns predictions."""
    index = labels.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def per_class_accuracy(matrix: torch.Tensor) -> torch.Tensor:
    """Recall of each class from a confusion matrix."""
    return matrix.diag().float() / matrix.sum(1).clamp(min=1).float()
