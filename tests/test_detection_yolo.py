"""cnnkit.detection.yolo and cnnkit.models.yolo: assignment, encoding, decoding, loss, postprocessing
and the registered detector."""

import math

import pytest
import torch

from cnnkit.detection.yolo import (
    YOLODetector,
    assign_targets,
    decode_boxes,
    decode_outputs,
    encode_boxes,
    postprocess,
    yolo_loss,
)
from cnnkit.models import create_model, list_models, model_info

ANCHORS = torch.tensor([[8.0, 8.0], [24.0, 12.0], [12.0, 24.0]])
STRIDE = 8
GRID = (8, 8)  # a 64x64 input


def targets_two_images():
    return [
        {"boxes": torch.tensor([[10.0, 20.0, 34.0, 32.0], [40.0, 2.0, 50.0, 26.0]]),
         "labels": torch.tensor([1, 0])},
        {"boxes": torch.tensor([[0.0, 40.0, 7.0, 47.0]]), "labels": torch.tensor([2])},
    ]  # fmt: skip


def test_assignment_puts_each_object_in_its_centre_cell_and_best_shape_anchor():
    a = assign_targets(targets_two_images(), ANCHORS, STRIDE, GRID)
    # image 0, box 0: centre (22, 26) -> col 2, row 3; 24x12 is anchor 1's shape exactly
    # image 0, box 1: centre (45, 14) -> col 5, row 1; 10x24 overlaps anchor 2 (12x24) most:
    #   IoU 240/288 vs anchor 0: 64/(240+64-64) = 0.27
    # image 1: centre (3.5, 43.5) -> col 0, row 5; 7x7 -> anchor 0 (49/64)
    assert a.image.tolist() == [0, 0, 1]
    assert a.col.tolist() == [2, 5, 0]
    assert a.row.tolist() == [3, 1, 5]
    assert a.anchor.tolist() == [1, 2, 0]
    assert a.labels.tolist() == [1, 0, 2]


def test_two_objects_in_one_cell_and_anchor_the_first_keeps_it():
    targets = [{"boxes": torch.tensor([[0.0, 0, 8, 8], [1, 1, 7, 7], [0, 0, 24, 12]]),
                "labels": torch.tensor([0, 1, 2])}]  # fmt: skip
    a = assign_targets(targets, ANCHORS, STRIDE, GRID)
    # boxes 0 and 1 both want cell (0, 0) and anchor 0; box 2 (centre (12, 6)) goes to cell (0, 1)
    assert a.labels.tolist() == [0, 2]


def test_centres_on_the_last_edge_go_to_the_last_cell():
    targets = [{"boxes": torch.tensor([[56.0, 56.0, 72.0, 72.0]]), "labels": torch.tensor([0])}]
    a = assign_targets(targets, ANCHORS, STRIDE, GRID)  # centre (64, 64): cell 8 -> clamped to 7
    assert (a.row.tolist(), a.col.tolist()) == ([7], [7])


def test_encoding_is_the_cell_offset_and_log_anchor_factors():
    boxes = torch.tensor([[10.0, 20.0, 34.0, 32.0]])  # centre (22, 26), 24x12
    encoded = encode_boxes(
        boxes, torch.tensor([3]), torch.tensor([2]), torch.tensor([[12.0, 24.0]]), 8
    )
    # 22/8 - 2 = 0.75, 26/8 - 3 = 0.25, log(24/12) = log 2, log(12/24) = -log 2
    assert encoded[0].tolist() == pytest.approx([0.75, 0.25, math.log(2), -math.log(2)])


def test_encode_then_decode_returns_the_same_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 40], 1)
    targets = [{"boxes": boxes, "labels": torch.zeros(50, dtype=torch.long)}]
    a = assign_targets(targets, ANCHORS, STRIDE, (13, 13))
    encoded = encode_boxes(a.boxes, a.row, a.col, ANCHORS[a.anchor], STRIDE)
    decoded = decode_boxes(encoded, a.row, a.col, ANCHORS[a.anchor], STRIDE)
    torch.testing.assert_close(decoded, a.boxes, atol=1e-4, rtol=0)
    assert ((encoded[:, :2] >= 0) & (encoded[:, :2] < 1)).all()


def test_decoding_zero_outputs_gives_anchors_centred_in_their_cells():
    outputs = torch.zeros(1, 3, 2, 2, 5 + 4)
    boxes, objectness, probabilities = decode_outputs(outputs, ANCHORS, STRIDE)
    # cell (row 1, col 0): centre ((0 + 0.5)·8, (1 + 0.5)·8) = (4, 12); anchor 1 is 24x12
    assert boxes[0, 1, 1, 0].tolist() == [4 - 12, 12 - 6, 4 + 12, 12 + 6]
    assert objectness.unique().tolist() == [0.5]
    assert probabilities.unique().tolist() == [0.25]


def perfect_outputs(targets, num_classes=3):
    """Raw outputs whose decoding is exactly the targets: logit of the offsets, log factors, a
    confident objectness at the assigned anchors only, a confident class."""
    outputs = torch.zeros(len(targets), len(ANCHORS), *GRID, 5 + num_classes)
    outputs[..., 4] = -12.0
    a = assign_targets(targets, ANCHORS, STRIDE, GRID)
    encoded = encode_boxes(a.boxes, a.row, a.col, ANCHORS[a.anchor], STRIDE)
    raw = torch.cat([torch.logit(encoded[:, :2]), encoded[:, 2:]], 1)
    outputs[a.image, a.anchor, a.row, a.col, :4] = raw
    outputs[a.image, a.anchor, a.row, a.col, 4] = 12.0
    outputs[a.image, a.anchor, a.row, a.col, 5 + a.labels] = 12.0
    return outputs


def test_postprocess_of_perfect_outputs_returns_the_targets():
    targets = targets_two_images()
    detections = postprocess(perfect_outputs(targets), ANCHORS, STRIDE, score_threshold=0.5)
    for found, target in zip(detections, targets, strict=True):
        order = torch.argsort(found["boxes"][:, 0])
        expected = torch.argsort(target["boxes"][:, 0])
        torch.testing.assert_close(
            found["boxes"][order], target["boxes"][expected], atol=1e-4, rtol=0
        )
        assert torch.equal(found["labels"][order], target["labels"][expected])
        assert (found["scores"] > 0.99).all()


def test_postprocess_suppresses_duplicates_of_the_same_class_only():
    outputs = torch.full((1, 3, *GRID, 5 + 2), 0.0)
    outputs[..., 4] = -12.0
    # anchors 0 and 1 of cell (0, 0) predict the same 8x8 box (t_w = log(8/24) for anchor 1)
    outputs[0, 0, 0, 0, 4] = outputs[0, 1, 0, 0, 4] = 12.0
    outputs[0, 1, 0, 0, 2] = math.log(8 / 24)
    outputs[0, 1, 0, 0, 3] = math.log(8 / 12)
    outputs[0, 0, 0, 0, 5] = 5.0  # class 0
    outputs[0, 1, 0, 0, 5] = 4.0  # class 0, a little less sure
    assert len(postprocess(outputs, ANCHORS, STRIDE, score_threshold=0.3)[0]["boxes"]) == 1
    outputs[0, 1, 0, 0, 5], outputs[0, 1, 0, 0, 6] = 0.0, 4.0  # now class 1
    assert postprocess(outputs, ANCHORS, STRIDE, score_threshold=0.3)[0]["labels"].tolist() == [
        0,
        1,
    ]


def hesitant_outputs() -> torch.Tensor:
    """One 8x8 box (anchor 0, cell (0, 0)), objectness ~1, class 0 at 0.6 and class 1 at 0.4."""
    outputs = torch.full((1, 3, *GRID, 5 + 2), 0.0)
    outputs[..., 4] = -12.0
    outputs[0, 0, 0, 0, 4] = 12.0
    outputs[0, 0, 0, 0, 5] = math.log(0.6 / 0.4)  # softmax: 0.6, 0.4
    return outputs


def test_multi_label_proposes_a_box_under_every_class_scoring_enough():
    outputs = hesitant_outputs()
    single = postprocess(outputs, ANCHORS, STRIDE, score_threshold=0.3)[0]
    assert single["labels"].tolist() == [0]
    multi = postprocess(outputs, ANCHORS, STRIDE, score_threshold=0.3, multi_label=True)[0]
    assert multi["labels"].tolist() == [0, 1]  # by descending score
    torch.testing.assert_close(multi["scores"], torch.tensor([0.6, 0.4]), atol=1e-4, rtol=0)
    assert torch.equal(multi["boxes"][0], multi["boxes"][1])
    torch.testing.assert_close(multi["boxes"][0], torch.tensor([0.0, 0.0, 8.0, 8.0]))
    # the threshold applies to each class's own score: 0.5 keeps class 0 only
    above = postprocess(outputs, ANCHORS, STRIDE, score_threshold=0.5, multi_label=True)[0]
    assert above["labels"].tolist() == [0]


def test_drawing_keeps_each_box_once_with_its_best_label():
    from cnnkit.viz.detection import one_label_per_box

    multi = postprocess(hesitant_outputs(), ANCHORS, STRIDE, 0.3, multi_label=True)[0]
    best = one_label_per_box(multi)
    assert (
        best["labels"].tolist() == [0] and best["scores"].tolist() == multi["scores"][:1].tolist()
    )
    assert len(one_label_per_box({k: v[:0] for k, v in multi.items()})["boxes"]) == 0


@pytest.mark.parametrize("box_loss", ["ciou", "giou", "mse"])
def test_loss_of_perfect_outputs_is_near_zero_and_below_random_outputs(box_loss):
    targets = targets_two_images()
    perfect, parts = yolo_loss(
        perfect_outputs(targets), targets, ANCHORS, STRIDE, box_loss=box_loss
    )
    random_outputs = torch.randn(2, 3, *GRID, 8, generator=torch.Generator().manual_seed(1))
    random_loss, _ = yolo_loss(random_outputs, targets, ANCHORS, STRIDE, box_loss=box_loss)
    assert parts["box"] < 1e-4 and parts["cls"] < 1e-4 and parts["obj"] < 1e-3
    assert perfect < 1e-3 < random_loss


def test_loss_without_objects_is_only_the_no_object_term():
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    outputs = torch.zeros(1, 3, *GRID, 8, requires_grad=True)
    total, parts = yolo_loss(outputs, empty, ANCHORS, STRIDE)
    # every one of the 3·8·8 anchors: BCE(logit 0, target 0) = log 2, weight 0.5, divided by 1
    assert total.item() == pytest.approx(0.5 * 192 * math.log(2), rel=1e-6)
    assert parts["box"] == parts["cls"] == 0.0
    total.backward()
    assert outputs.grad is not None


def test_loss_ignores_unassigned_predictions_that_overlap_an_object():
    targets = [{"boxes": torch.tensor([[0.0, 0, 8, 8]]), "labels": torch.tensor([0])}]
    outputs = perfect_outputs(targets)
    _, alone = yolo_loss(outputs, targets, ANCHORS, STRIDE, ignore_iou=0.3)
    # a confident neighbour, cell (0, 1) anchor 0 at zero offsets: box (8, 0)-(16, 8), IoU 0 with
    # the object: no-object BCE(12, 0) = softplus(12), times noobj_weight 0.5, divided by K = 1
    outputs[0, 0, 0, 1, 4] = 12.0
    _, penalized = yolo_loss(outputs, targets, ANCHORS, STRIDE, ignore_iou=0.3)
    extra = 0.5 * torch.nn.functional.softplus(torch.tensor(12.0)).item()
    assert penalized["obj"].item() == pytest.approx(alone["obj"].item() + extra, rel=1e-5)
    # moved left to the cell's edge (sigmoid(-12) ~ 0): box (4, 0)-(12, 8), IoU 32/96 = 1/3 > 0.3
    outputs[0, 0, 0, 1, 0] = -12.0
    _, ignored = yolo_loss(outputs, targets, ANCHORS, STRIDE, ignore_iou=0.3)
    _, not_ignored = yolo_loss(outputs, targets, ANCHORS, STRIDE, ignore_iou=0.4)
    # ignored: not even its former BCE(-12, 0) = 6e-6 is counted any more
    assert ignored["obj"].item() == pytest.approx(alone["obj"].item(), abs=1e-5)
    assert not_ignored["obj"].item() == pytest.approx(penalized["obj"].item(), rel=1e-5)


def test_detector_is_registered_with_the_detect_task():
    assert "yolo" in list_models(task="detect") and "yolo" not in list_models()
    info = model_info("yolo")
    assert info.task == "detect" and info.input_size == (1, 128, 128)


def test_detector_output_grid_follows_the_input_size_for_multi_scale_training():
    torch.manual_seed(0)
    model = create_model("yolo", num_classes=3, anchors=ANCHORS.tolist()).train()
    assert isinstance(model, YOLODetector) and model.stride == 4  # fashion_cnn's last stage
    for size in (32, 48):
        out = model(torch.randn(2, 1, size, size))
        assert out.shape == (2, 3, size // 4, size // 4, 5 + 3)


def test_detector_trains_end_to_end_on_its_loss():
    torch.manual_seed(0)
    model = create_model("yolo", num_classes=3, anchors=ANCHORS.tolist()).train()
    images = torch.rand(2, 1, 32, 32)
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 16.0]]), "labels": torch.tensor([1])}] * 2
    loss, _ = yolo_loss(model(images), targets, model.anchors, model.stride)
    loss.backward()
    head_grads = [p.grad for p in model.head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in head_grads)


def test_top_down_path_merges_every_deeper_stage_into_the_head_stage():
    from cnnkit.models.yolo import TopDown

    torch.manual_seed(0)
    options = {"num_classes": 3, "backbone": "resnet18_narrow", "feature_index": -3}
    plain = create_model("yolo", **options)
    merged = create_model("yolo", **options, top_down=True).eval()
    assert plain.top_down is None and isinstance(merged.top_down, TopDown)
    # stage -3 of five (channels 32, 32, 64, 128, 256): laterals of stages 2, 3, 4; two smoothings
    widths = [conv.in_channels for conv in merged.top_down.lateral]
    assert widths == [64, 128, 256] and len(merged.top_down.smooth) == 2
    assert merged.head.conv.in_channels == 128  # the merged map's width (hidden_channels)
    x = torch.randn(2, 1, 64, 64)
    assert merged(x).shape == plain(x).shape == (2, 5, 8, 8, 5 + 3)
    # the deepest stage now reaches the output: changing it changes the grid
    maps = merged.backbone(x)
    base = merged.head(merged.top_down(maps))
    maps[-1] = maps[-1] + 1.0
    assert not torch.allclose(merged.head(merged.top_down(maps)), base)
    # on the deepest stage there is nothing deeper to merge
    assert create_model("yolo", num_classes=3, top_down=True).top_down is None


def test_stages_deeper_than_the_heads_are_dropped_and_old_checkpoints_still_load():
    from cnnkit.models.checkpoints import load_state_dict_strict

    options = {"num_classes": 3, "backbone": "resnet18_narrow", "feature_index": -3}
    torch.manual_seed(0)
    model = create_model("yolo", **options).eval()
    torch.manual_seed(0)
    full = create_model("resnet18_narrow", in_channels=1, features_only=True).eval()
    # stem + two stages kept of four; feature_index resolved to the last kept map
    assert len(model.backbone.stages) == 2 and model.feature_index == 2
    assert model.backbone.feature_channels == [32, 32, 64] and model.stride == 8
    # built before the cut: the kept weights are the ones the full backbone draws
    kept = model.backbone.state_dict()
    assert kept.keys() < full.state_dict().keys()
    assert all(torch.equal(kept[k], full.state_dict()[k]) for k in kept)
    x = torch.randn(2, 1, 64, 64)
    assert torch.equal(model.backbone(x)[-1], full(x)[2])
    # a checkpoint of the uncut detector (with stages 2 and 3) loads; the extra weights are ignored
    old = {**model.state_dict(), **{f"backbone.{k}": v for k, v in full.state_dict().items()}}
    assert "backbone.stages.3.0.conv1.weight" in old
    fresh = create_model("yolo", **options).eval()
    load_state_dict_strict(fresh, old)
    assert torch.equal(fresh(x), model(x))
    # any other unexpected key is still an error
    with pytest.raises(ValueError, match="'backbone.extra' is not a parameter"):
        load_state_dict_strict(fresh, {**old, "backbone.extra": torch.zeros(1)})
    # the top-down path reads the deeper stages: nothing is dropped then
    merged = create_model("yolo", **options, top_down=True)
    assert len(merged.backbone.stages) == 4


def test_objectness_starts_at_the_one_percent_prior():
    model = create_model("yolo", num_classes=2).eval()
    with torch.no_grad():
        _, objectness, _ = decode_outputs(
            model(torch.zeros(1, 1, 32, 32)), model.anchors, model.stride
        )
    # zero input -> zero-ish features; the BatchNorm and the bias: objectness near 0.01
    assert objectness.mean().item() == pytest.approx(0.01, abs=0.01)


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([[10.0, 0, 5, 10]], "expected x2 >= x1"),
        ([[0.0, 0, 0, 10]], "expected a width and height > 0"),
        ([[0.0, 0, float("nan"), 10]], "expected finite coordinates"),
    ],
)
def test_bad_target_boxes_are_a_clear_error(boxes, message):
    targets = [{"boxes": torch.tensor(boxes), "labels": torch.tensor([0])}]
    with pytest.raises(ValueError, match=rf"targets\[0\]\['boxes'\].*{message}"):
        yolo_loss(torch.zeros(1, 3, *GRID, 8), targets, ANCHORS, STRIDE)


def test_nan_outputs_are_a_clear_error_at_postprocessing():
    outputs = torch.zeros(1, 3, *GRID, 8)
    outputs[0, 0, 0, 0, 4] = float("nan")
    with pytest.raises(ValueError, match="is NaN"):
        postprocess(outputs, ANCHORS, STRIDE)


def test_a_batch_and_targets_of_different_lengths_are_an_error():
    with pytest.raises(ValueError, match="1 targets for a batch of 2"):
        yolo_loss(torch.zeros(2, 3, *GRID, 8), targets_two_images()[:1], ANCHORS, STRIDE)


def test_bfloat16_outputs_give_a_float32_loss_and_detections():
    # under CUDA autocast the head's outputs are bf16; the loss and the boxes are float32
    targets = targets_two_images()
    outputs = perfect_outputs(targets).bfloat16()
    loss, _ = yolo_loss(outputs, targets, ANCHORS, STRIDE)
    assert loss.dtype == torch.float32
    assert postprocess(outputs, ANCHORS, STRIDE)[0]["boxes"].dtype == torch.float32


# ---- the crop classifier (crop=S) ----------------------------------------------------------------
def crop_detector(**options) -> YOLODetector:
    torch.manual_seed(0)
    model = create_model(
        "yolo", num_classes=3, anchors=ANCHORS.tolist(), crop=12, crop_boxes=2, **options
    )
    assert isinstance(model, YOLODetector)
    return model


def test_chosen_boxes_are_the_best_after_nms_padded_with_the_suppressed():
    model = crop_detector()
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40], [50, 50, 60, 60]]])
    objectness = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    # box 1 overlaps box 0 (IoU 81/119 = 0.68 > 0.5): suppressed; the two best are then 0 and 2
    assert model.chosen_boxes(boxes, objectness).tolist() == [[0, 2]]
    model.crop_boxes = 4  # all four: the three kept, then the suppressed one
    assert model.chosen_boxes(boxes, objectness).tolist() == [[0, 2, 3, 1]]
    # a second image with the same boxes, scored the other way round: images never suppress
    # each other's boxes (box 3 would suppress nothing; box 1 now beats box 0)
    two = torch.cat([boxes, boxes])
    scores = torch.cat([objectness, torch.tensor([[0.1, 0.9, 0.7, 0.8]])])
    model.crop_boxes = 3
    assert model.chosen_boxes(two, scores).tolist() == [[0, 2, 3], [1, 3, 2]]


def test_crop_logits_go_to_the_anchors_overlapping_a_chosen_box_and_nowhere_else():
    model = crop_detector().eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        maps = model.backbone(x)
        grid = model.head(maps[model.feature_index])
        out = model(x)
        boxes, objectness, _ = decode_outputs(grid, model.anchors, model.stride)
        boxes = boxes.clamp(0, 64).reshape(1, -1, 4)
        chosen = model.chosen_boxes(boxes, objectness.reshape(1, -1))[0]
    from torchvision.ops import box_iou

    member = box_iou(boxes[0], boxes[0][chosen]).max(dim=1).values > 0.5  # A
    flat_out, flat_grid = out.reshape(-1, 5 + 3), grid.reshape(-1, 5 + 3)
    assert torch.equal(flat_out[:, :5], flat_grid[:, :5])  # boxes and objectness untouched
    assert torch.equal(flat_out[~member, 5:], flat_grid[~member, 5:])
    assert member[chosen].all() and member.sum() >= len(chosen)
    changed = (flat_out[member, 5:] - flat_grid[member, 5:]).abs().amax(dim=1)
    assert (changed > 0).all()
    # the chosen box's own anchor gets exactly the crop classifier's logits on its crop
    with torch.no_grad():
        logits = model.crop_logits(model.crop(x, boxes[0][chosen[:1]]))
    torch.testing.assert_close(flat_out[chosen[0], 5:] - flat_grid[chosen[0], 5:], logits[0])


def test_crop_classifier_learns_through_the_class_loss():
    model = crop_detector().train()
    images = torch.rand(2, 1, 32, 32)
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 16.0]]), "labels": torch.tensor([1])}] * 2
    model.crop_boxes = 3 * 8 * 8  # every anchor of the 8x8 grid: the assigned one is cropped
    loss, _ = yolo_loss(model(images), targets, model.anchors, model.stride)
    loss.backward()
    grads = [p.grad for p in model.crop_logits.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(("option", "value"), [("crop", -1), ("crop_boxes", 0)])
def test_bad_crop_options_are_a_clear_error(option, value):
    with pytest.raises(ValueError, match="expected a crop side >= 0"):
        create_model("yolo", num_classes=3, **{"crop": 8, option: value})


def test_batched_iou_is_torchvisions_box_iou_image_by_image():
    from torchvision.ops import box_iou

    from cnnkit.models.yolo import _batched_iou

    g = torch.Generator().manual_seed(0)
    corner = torch.rand(3, 7, 2, generator=g) * 50
    a = torch.cat([corner, corner + 1 + torch.rand(3, 7, 2, generator=g) * 30], -1)
    corner = torch.rand(3, 4, 2, generator=g) * 50
    b = torch.cat([corner, corner + 1 + torch.rand(3, 4, 2, generator=g) * 30], -1)
    expected = torch.stack([box_iou(x, y) for x, y in zip(a, b, strict=True)])
    torch.testing.assert_close(_batched_iou(a, b), expected)
