"""Losses for semantic segmentation: pixel-wise cross-entropy, soft Dice, and their sum.

Shapes: ``logits`` (N, K, H, W) (or any (N, K, ...)), ``target`` (N, H, W) integer class indices in
[0, K) or ``ignore_index``. Pixels whose target is ``ignore_index`` (255 by default: PASCAL VOC marks
object borders and "difficult" pixels with 255) take no part in either loss.

Both are computed without a host synchronisation: a batch whose pixels are all ignored gives a loss
of 0 (with a gradient of 0), never NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

VOC_IGNORE_INDEX = 255


def _check_shapes(logits: torch.Tensor, target: torch.Tensor, loss: str) -> None:
    if logits.dim() < 2 or logits.shape[:1] + logits.shape[2:] != target.shape:
        raise ValueError(
            f"{loss}: logits of shape {tuple(logits.shape)} and target of shape "
            f"{tuple(target.shape)}; expected logits (N, K, H, W) and target (N, H, W)"
        )


def pixel_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = VOC_IGNORE_INDEX,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy averaged over the pixels that are not ignored (weighted by ``weight[class]``
    when class weights are given): ``torch.nn.functional.cross_entropy``'s mean, except that it is 0
    rather than NaN when every pixel is ignored."""
    _check_shapes(logits, target, "pixel_cross_entropy")
    target = target.long()
    total = F.cross_entropy(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    valid = target != ignore_index
    # torch's mean divides by the summed weights of the kept pixels; 0 when none is kept
    pixel_weight = (
        valid.to(total.dtype) if weight is None else weight[target.where(valid, 0)] * valid
    )
    return total / pixel_weight.sum().clamp_min(torch.finfo(total.dtype).tiny)


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = VOC_IGNORE_INDEX,
    eps: float = 1e-7,
) -> torch.Tensor:
    """1 - mean soft Dice coefficient over the classes present in the batch's target.

    For class c, with p the softmax probabilities and g the one-hot target over all non-ignored
    pixels of the batch: Dice_c = 2·Σ p·g / (Σ p + Σ g) (Milletari, Navab & Ahmadi, "V-Net", 3DV 2016,
    eq. 1, with the linear denominator of Sudre et al., "Generalised Dice Overlap as a Deep Learning
    Loss Function", DLMIA 2017, and segmentation_models_pytorch's ``DiceLoss``). Classes absent from
    the target are left out of the mean (their Dice has no ground truth to overlap); their false
    positives are the cross-entropy's to punish.
    """
    _check_shapes(logits, target, "soft_dice_loss")
    num_classes = logits.shape[1]
    target = target.long()
    valid = (target != ignore_index).unsqueeze(1)  # N x 1 x H x W
    one_hot = F.one_hot(target.where(valid.squeeze(1), 0), num_classes).movedim(-1, 1)
    one_hot = one_hot * valid  # N x K x H x W, ignored pixels all zero
    probs = logits.float().softmax(1) * valid
    dims = [0, *range(2, logits.dim())]
    intersection = (probs * one_hot).sum(dims)  # K
    target_area = one_hot.sum(dims)
    dice = 2 * intersection / (probs.sum(dims) + target_area).clamp_min(eps)
    present = target_area > 0
    return ((1 - dice) * present).sum() / present.sum().clamp_min(1)


def cross_entropy_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = VOC_IGNORE_INDEX,
    dice_weight: float = 1.0,
) -> torch.Tensor:
    """``pixel_cross_entropy + dice_weight · soft_dice_loss``, the same pixels ignored by both."""
    return pixel_cross_entropy(logits, target, ignore_index) + dice_weight * soft_dice_loss(
        logits, target, ignore_index
    )
