"""cnnkit.detection.boxes: IoU and NMS are torchvision's, conversions follow the documented formats."""

import pytest
import torch
from torchvision import ops

from cnnkit.detection.boxes import (
    box_iou,
    convert_boxes,
    decode_localization,
    denormalize_boxes,
    encode_localization,
    nms,
    normalize_boxes,
    wh_iou,
)


def random_boxes(n: int, seed: int, size: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 4 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_box_iou_hand_value():
    # (0,0)-(2,2) and (1,1)-(3,3): intersection 1, union 4 + 4 - 1 = 7
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0]])
    assert box_iou(a, b).tolist() == [[pytest.approx(1 / 7), 0.0]]


def test_box_iou_equals_torchvision():
    a, b = random_boxes(30, 0), random_boxes(20, 1)
    assert torch.equal(box_iou(a, b), ops.box_iou(a, b))


def test_wh_iou_is_the_iou_of_boxes_sharing_a_centre():
    shapes = torch.tensor([[4.0, 2.0], [1.0, 8.0]])
    anchors = torch.tensor([[2.0, 2.0], [4.0, 4.0], [1.0, 1.0]])

    def centred(wh: torch.Tensor) -> torch.Tensor:
        return torch.cat([-wh / 2, wh / 2], dim=1)

    assert torch.allclose(wh_iou(shapes, anchors), ops.box_iou(centred(shapes), centred(anchors)))
    # hand: 4x2 vs 2x2 -> inter 4, union 8 + 4 - 4 = 8
    assert wh_iou(shapes, anchors)[0, 0] == pytest.approx(0.5)


def test_nms_equals_torchvision_nms():
    boxes = random_boxes(200, 2)
    scores = torch.rand(200, generator=torch.Generator().manual_seed(3))
    assert torch.equal(nms(boxes, scores, 0.5), ops.nms(boxes, scores, 0.5))


def test_nms_per_class_equals_torchvision_batched_nms():
    boxes = random_boxes(200, 4)
    g = torch.Generator().manual_seed(5)
    scores, labels = torch.rand(200, generator=g), torch.randint(0, 4, (200,), generator=g)
    kept = nms(boxes, scores, 0.4, labels=labels)
    assert torch.equal(kept, ops.batched_nms(boxes, scores, labels, 0.4))


def test_nms_returns_indices_by_descending_score():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    scores = torch.tensor([0.2, 0.9, 0.5])
    assert nms(boxes, scores).tolist() == [1, 2, 0]


def test_nms_score_threshold_drops_low_boxes_and_keeps_original_indices():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    scores = torch.tensor([0.2, 0.9, 0.5])
    assert nms(boxes, scores, score_threshold=0.5).tolist() == [1, 2]


def test_nms_suppresses_above_the_threshold_not_at_it():
    # torchvision drops IoU > threshold; the notes' "IoU >= 50%" would drop the second box here.
    # (IoU 0.5 is exact in float32; 0.6 = 60/100 is not: it rounds up to 0.6000000238 > 0.6.)
    # IoU with box 0: 0.5 and 0.45; boxes 1 and 2 do not overlap
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 5.5, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, iou_threshold=0.5).tolist() == [0, 1, 2]
    assert nms(boxes, scores, iou_threshold=0.49).tolist() == [0, 2]
    assert nms(boxes, scores, iou_threshold=0.4).tolist() == [0]


def test_nms_keeps_the_lower_index_among_equal_scores():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    assert nms(boxes, torch.tensor([0.5, 0.5])).tolist() == [0]


def test_nms_per_class_does_not_suppress_across_classes():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    scores, labels = torch.tensor([0.9, 0.8]), torch.tensor([0, 1])
    assert nms(boxes, scores, labels=labels).tolist() == [0, 1]
    assert nms(boxes, scores).tolist() == [0]


@pytest.mark.parametrize(
    ("boxes", "scores", "message"),
    [
        ([[0.0, 0, 10, 10]], [float("nan")], r"scores\[0\] is NaN"),
        ([[10.0, 0, 0, 10]], [0.5], "x2 >= x1"),
        ([[0.0, 10, 10, 0]], [0.5], "y2 >= y1"),
        ([[0.0, 0, 10, 10]], [0.5, 0.4], r"expected \(1,\)"),
        ([[0.0, 0, 10]], [0.5], r"expected shape \(N, 4\)"),
        ([[0.0, 0, float("inf"), 10]], [0.5], "finite"),
    ],
)
def test_nms_bad_input_is_a_clear_error(boxes, scores, message):
    with pytest.raises(ValueError, match=message):
        nms(torch.tensor(boxes), torch.tensor(scores))


def test_box_iou_rejects_x2_below_x1():
    with pytest.raises(ValueError, match=r"box_iou: b: box 1 is .*expected x2 >= x1"):
        box_iou(random_boxes(2, 0), torch.tensor([[0.0, 0, 1, 1], [5.0, 0, 1, 1]]))


def test_convert_boxes_hand_values():
    xyxy = torch.tensor([[10.0, 20.0, 40.0, 60.0]])
    assert convert_boxes(xyxy, "xyxy", "xywh").tolist() == [[10, 20, 30, 40]]
    assert convert_boxes(xyxy, "xyxy", "cxcywh").tolist() == [[25, 40, 30, 40]]
    with pytest.raises(ValueError, match="format 'yolo'"):
        convert_boxes(xyxy, "xyxy", "yolo")  # type: ignore[arg-type]


def test_normalize_divides_x_by_width_and_y_by_height():
    xyxy = torch.tensor([[10.0, 20.0, 40.0, 60.0]])
    normalized = normalize_boxes(xyxy, (100, 200))  # height 100, width 200
    assert normalized[0].tolist() == pytest.approx([0.05, 0.2, 0.2, 0.6])
    assert torch.allclose(denormalize_boxes(normalized, (100, 200)), xyxy)


def test_localization_encoding_is_centre_and_square_roots_and_inverts():
    # a 16x36 box centred at (50, 25) in a 100x200 (h x w) image: cx 0.25, cy 0.25,
    # sqrt(16/200) = sqrt(0.08), sqrt(36/100) = 0.6
    xyxy = torch.tensor([[42.0, 7.0, 58.0, 43.0]])
    encoded = encode_localization(xyxy, (100, 200))
    assert encoded[0].tolist() == pytest.approx([0.25, 0.25, 0.08**0.5, 0.6])
    assert torch.allclose(decode_localization(encoded, (100, 200)), xyxy)
