"""Segmentation metrics (``cnnkit.metrics``) and losses (``cnnkit.losses``), issue #13.

References: a confusion matrix written out by hand, the formula Keras documents for ``MeanIoU``,
scikit-learn's ``confusion_matrix`` and ``jaccard_score``, and ``torch.nn.functional.cross_entropy``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sklearn.metrics
import torch
import torch.nn.functional as F

from cnnkit.losses import cross_entropy_dice_loss, pixel_cross_entropy, soft_dice_loss
from cnnkit.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    mean_iou,
    per_class_iou,
    pixel_accuracy,
)

# ---- a confusion matrix by hand -------------------------------------------------------------------
# Six pixels, four classes; class 3 occurs in neither map; the last pixel's target is VOC's 255.
TARGET = torch.tensor([[0, 0, 1], [1, 2, 255]])
PRED = torch.tensor([[0, 1, 1], [1, 0, 2]])
# rows = targets, columns = predictions: 0→0, 0→1, 1→1, 1→1, 2→0 (the 255 pixel is not counted)
HAND_MATRIX = torch.tensor([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


def test_confusion_matrix_counts_target_rows_and_prediction_columns_without_ignored_pixels() -> (
    None
):
    assert torch.equal(confusion_matrix(PRED, TARGET, 4, ignore_index=255), HAND_MATRIX)


def test_per_class_iou_by_hand() -> None:
    # IoU = TP / (row + column - TP): class 0: 1 / (2 + 2 - 1); class 1: 2 / (2 + 3 - 2);
    # class 2: 0 / (1 + 0 - 0); class 3: 0 / 0, absent from both maps
    iou = per_class_iou(HAND_MATRIX)
    torch.testing.assert_close(iou[:3], torch.tensor([1 / 3, 2 / 3, 0.0], dtype=torch.float64))
    assert math.isnan(iou[3])


def test_mean_iou_leaves_out_classes_absent_from_both_maps() -> None:
    # (1/3 + 2/3 + 0) / 3 classes present, not / 4
    value = mean_iou(PRED, TARGET, num_classes=4, ignore_index=255)
    assert value.item() == pytest.approx(1 / 3)


def test_pixel_accuracy_counts_only_pixels_that_are_not_ignored() -> None:
    assert pixel_accuracy(HAND_MATRIX).item() == pytest.approx(3 / 5)


def keras_mean_iou(matrix: np.ndarray) -> float:
    """``keras.metrics.MeanIoU.result`` as Keras documents and implements it (Keras 3,
    ``keras/src/metrics/iou_metrics.py``): IoU = TP / (TP + FP + FN) per class, averaged over the
    classes whose denominator is not zero (``divide_no_nan``, ``count_nonzero``)."""
    sum_over_row = matrix.sum(axis=0)  # predictions per class
    sum_over_col = matrix.sum(axis=1)  # targets per class
    true_positives = np.diag(matrix)
    denominator = sum_over_row + sum_over_col - true_positives
    num_valid_entries = np.count_nonzero(denominator)
    iou = np.divide(true_positives, denominator, out=np.zeros(len(matrix)), where=denominator != 0)
    return float(iou.sum() / num_valid_entries)


def random_label_maps(num_classes: int, absent: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) of shape (3, 17, 19) with class ``absent`` in neither and ~10% 255 targets."""
    generator = torch.Generator().manual_seed(3)
    target = torch.randint(0, num_classes, (3, 17, 19), generator=generator)
    pred = torch.where(
        torch.rand(target.shape, generator=generator) < 0.6,
        target,
        torch.randint(0, num_classes, target.shape, generator=generator),
    )
    pred[pred == absent] = 0
    target[target == absent] = 1
    target[torch.rand(target.shape, generator=generator) < 0.1] = 255
    return pred, target


def test_mean_iou_equals_the_formula_keras_documents() -> None:
    pred, target = random_label_maps(num_classes=6, absent=4)
    matrix = confusion_matrix(pred, target, 6, ignore_index=255)
    assert matrix[4].sum() == 0 and matrix[:, 4].sum() == 0
    expected = keras_mean_iou(matrix.numpy())
    assert mean_iou(pred, target, 6, ignore_index=255).item() == pytest.approx(expected, rel=1e-12)


def test_confusion_matrix_and_iou_equal_scikit_learns() -> None:
    pred, target = random_label_maps(num_classes=6, absent=4)
    keep = target != 255
    y_true, y_pred = target[keep].numpy(), pred[keep].numpy()
    expected = sklearn.metrics.confusion_matrix(y_true, y_pred, labels=range(6))
    matrix = confusion_matrix(pred, target, 6, ignore_index=255)
    np.testing.assert_array_equal(matrix.numpy(), expected)
    present = [0, 1, 2, 3, 5]
    jaccard = sklearn.metrics.jaccard_score(y_true, y_pred, labels=present, average=None)
    np.testing.assert_allclose(per_class_iou(matrix)[present].numpy(), jaccard, rtol=1e-12)


def test_streaming_updates_equal_one_matrix_of_everything() -> None:
    pred, target = random_label_maps(num_classes=6, absent=4)
    metric = ConfusionMatrix(6, ignore_index=255)
    for index in range(3):
        metric.update(pred[index : index + 1], target[index : index + 1])
    assert torch.equal(metric.matrix, confusion_matrix(pred, target, 6, ignore_index=255))
    result = metric.compute()
    assert result["mean_iou"].item() == pytest.approx(mean_iou(pred, target, 6, 255).item())
    assert result["iou"].shape == (6,) and math.isnan(result["iou"][4])


def test_states_of_two_shards_sum_to_the_state_of_the_whole() -> None:
    # what an all_reduce(SUM) of ``matrix`` does under DistributedDataParallel
    pred, target = random_label_maps(num_classes=6, absent=4)
    first, second, whole = (ConfusionMatrix(6, ignore_index=255) for _ in range(3))
    first.update(pred[:2], target[:2])
    second.update(pred[2:], target[2:])
    whole.update(pred, target)
    assert torch.equal(first.matrix + second.matrix, whole.matrix)


def test_update_takes_logits_and_uses_their_argmax() -> None:
    logits = F.one_hot(PRED, 4).movedim(-1, 0)[None].float() * 5.0  # 1 x 4 x 2 x 3
    metric = ConfusionMatrix(4, ignore_index=255)
    metric.update(logits, TARGET[None])
    assert torch.equal(metric.matrix, HAND_MATRIX)


def test_reset_empties_the_matrix() -> None:
    metric = ConfusionMatrix(4, ignore_index=255)
    metric.update(PRED, TARGET)
    metric.reset()
    assert metric.matrix.sum() == 0


def test_a_label_outside_the_classes_is_an_error_naming_the_range() -> None:
    with pytest.raises(ValueError, match=r"target labels from 7 to 9 outside .* 0 to 3 or 255$"):
        confusion_matrix(torch.tensor([0, 1, 2]), torch.tensor([7, 1, 9]), 4, ignore_index=255)


def test_a_prediction_outside_the_classes_is_an_error_too() -> None:
    with pytest.raises(ValueError, match=r"prediction labels from 4 to 4 outside .* 0 to 3$"):
        confusion_matrix(torch.tensor([0, 4]), torch.tensor([0, 1]), 4, ignore_index=255)


def test_without_ignore_index_255_is_an_out_of_range_label() -> None:
    with pytest.raises(ValueError, match="target labels from 255 to 255 outside .* 0 to 3$"):
        confusion_matrix(PRED, TARGET, 4)


def test_prediction_and_target_shapes_must_match() -> None:
    with pytest.raises(ValueError, match=r"prediction shape \(2, 2\) differs from target shape"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 3), 4)


# ---- losses ---------------------------------------------------------------------------------------
def logits_and_target() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 4, generator=generator, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 4), generator=generator)
    target[0, 0, :] = 255
    return logits, target


def test_pixel_cross_entropy_ignores_255_by_default_as_torch_does() -> None:
    logits, target = logits_and_target()
    expected = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(pixel_cross_entropy(logits, target), expected)


def test_pixel_cross_entropy_is_the_mean_of_minus_log_softmax_over_kept_pixels() -> None:
    logits, target = logits_and_target()
    log_probs = logits.log_softmax(1).movedim(1, -1)  # N x H x W x K
    keep = target != 255
    expected = -log_probs[keep].gather(1, target[keep][:, None]).mean()
    torch.testing.assert_close(pixel_cross_entropy(logits, target), expected)


def test_pixel_cross_entropy_with_class_weights_equals_torchs_weighted_mean() -> None:
    logits, target = logits_and_target()
    weight = torch.tensor([0.2, 1.0, 3.0])
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    torch.testing.assert_close(pixel_cross_entropy(logits, target, weight=weight), expected)


def test_losses_of_an_all_ignored_batch_are_zero_not_nan() -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), 255)
    loss = cross_entropy_dice_loss(logits, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_soft_dice_by_hand() -> None:
    # Two pixels, targets 0 and 1, softmax (0.75, 0.25) and (0.25, 0.75) (logit gap ln 3);
    # class 0: 2 * 0.75 / (0.75 + 0.25 + 1) = 0.75, class 1 the same: loss 1 - 0.75.
    # A third pixel, ignored, with a confident wrong prediction, changes nothing.
    gap = math.log(3.0)
    logits = torch.tensor([[[[gap, 0.0, 9.0]], [[0.0, gap, 0.0]]]])  # 1 x 2 x 1 x 3
    target = torch.tensor([[[0, 1, 255]]])
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.25)


def test_soft_dice_averages_only_the_classes_present_in_the_target() -> None:
    # target all class 0, softmax (0.75, 0.25, ·) → only class 0 counts: 2·1.5 / (1.5 + 2) = 6/7
    gap = math.log(3.0)
    logits = torch.tensor([[[[gap, gap]], [[0.0, 0.0]], [[-50.0, -50.0]]]])  # 1 x 3 x 1 x 2
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - 6 / 7, rel=1e-5)


def test_soft_dice_of_a_perfect_prediction_is_zero() -> None:
    target = torch.tensor([[[0, 1], [2, 1]]])
    logits = F.one_hot(target, 3).movedim(-1, 1).float() * 100.0
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_cross_entropy_dice_loss_is_their_sum() -> None:
    logits, target = logits_and_target()
    expected = pixel_cross_entropy(logits, target) + soft_dice_loss(logits, target)
    torch.testing.assert_close(cross_entropy_dice_loss(logits, target), expected)


def test_loss_shapes_must_match_logits_n_k_h_w_and_target_n_h_w() -> None:
    with pytest.raises(ValueError, match=r"logits of shape \(2, 3, 4, 4\) and target of shape"):
        pixel_cross_entropy(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long))
