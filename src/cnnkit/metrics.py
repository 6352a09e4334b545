"""Metrics as pure tensor functions, no host copies: segmentation's from a confusion matrix (below),
super-resolution's PSNR and SSIM (:func:`psnr`, :func:`ssim`, at the end).

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


# ---- image quality (super-resolution) ------------------------------------------------------------
# PSNR and SSIM come from torchmetrics (imported when first used), SSIM as Wang et al. 2004 define it
# and the SR papers report it (11 x 11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03).
# tests/test_superres.py checks both against skimage.metrics.
SSIM_WINDOW_RADIUS = 5  # the 11 x 11 window's


def crop_border(images: torch.Tensor, border: int) -> torch.Tensor:
    """``images`` (..., H, W) without ``border`` pixels on each side (the SR papers' "shave")."""
    if border < 0 or 2 * border >= min(images.shape[-2:]):
        raise ValueError(
            f"crop_border: border {border} on images of {images.shape[-1]}x{images.shape[-2]}; "
            "expected a border >= 0 that leaves pixels"
        )
    return images[..., border : images.shape[-2] - border, border : images.shape[-1] - border]


def psnr(
    pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, border: int = 0
) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image, in dB: (N,) for (N, C, H, W) batches,
    ``10 log10(data_range² / MSE)`` over the image without ``border`` pixels a side
    (``torchmetrics.functional.image.peak_signal_noise_ratio``)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    pred, target = crop_border(pred.float(), border), crop_border(target.float(), border)
    return peak_signal_noise_ratio(
        pred, target, data_range=data_range, reduction="none", dim=(1, 2, 3)
    )


def ssim(
    pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, border: int = 0
) -> torch.Tensor:
    """Structural similarity of each image: (N,) for (N, C, H, W) batches, over the image without
    ``border`` pixels a side: the mean of the SSIM map over the positions where the 11 x 11 window
    lies inside the image, as Wang et al.'s MATLAB ``ssim`` and ``skimage.metrics.structural_similarity``
    average it. The map is torchmetrics' (``structural_similarity_index_measure``); its own mean also
    counts the positions that see its reflect padding, so the window radius is cropped here."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    pred, target = crop_border(pred.float(), border), crop_border(target.float(), border)
    if min(pred.shape[-2:]) <= 2 * SSIM_WINDOW_RADIUS:
        raise ValueError(
            f"ssim: images of {pred.shape[-1]}x{pred.shape[-2]} after a {border}-pixel border "
            "crop; SSIM's 11 x 11 window needs more than 10 x 10"
        )
    _, full = structural_similarity_index_measure(
        pred, target, data_range=data_range, reduction="none", return_full_image=True
    )
    inside = crop_border(full, SSIM_WINDOW_RADIUS)  # N x C x H-10 x W-10
    return inside.reshape(len(inside), -1).mean(1)
