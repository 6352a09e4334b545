"""cnnkit.detection.metrics: COCO mAP equal to pycocotools' COCOeval (built here the documented way,
from JSON files and ``loadRes``), the VOC AP on a case computed by hand, bad input."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cnnkit.detection.metrics import (
    COCO_SUMMARY_KEYS,
    DetectionMetric,
    mean_average_precision,
    voc_ap,
)


# ---------------------------------------------------------------- the reference: pycocotools by file
def pycocotools_reference(predictions, targets, tmp_path, iou_thresholds=None, cat_ids=None):
    """COCOeval.stats the way COCO's own examples run it: annotation and result JSON files."""
    labels = sorted({int(c) for item in (*predictions, *targets) for c in item["labels"].tolist()})
    annotations, results = [], []
    for i, t in enumerate(targets):
        for box, label in zip(t["boxes"].double().numpy(), t["labels"].tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "category_id": label,
                 "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0}
            )  # fmt: skip
    for i, p in enumerate(predictions):
        for box, score, label in zip(
            p["boxes"].double().numpy(), p["scores"].double().tolist(), p["labels"].tolist(),
            strict=True,
        ):  # fmt: skip
            w, h = box[2] - box[0], box[3] - box[1]
            results.append(
                {"image_id": i + 1, "category_id": label, "bbox": [box[0], box[1], w, h],
                 "score": score}
            )  # fmt: skip
    images = [{"id": i + 1} for i in range(len(targets))]
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    categories = [{"id": c, "name": str(c)} for c in labels]
    gt_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        if results:
            dt_file.write_text(json.dumps(results))
            dt = gt.loadRes(str(dt_file))
        else:  # loadRes cannot read an empty result list
            dt_file.write_text(
                json.dumps({"images": images, "annotations": [], "categories": categories})
            )
            dt = COCO(str(dt_file))
        ev = COCOeval(gt, dt, "bbox")
        if iou_thresholds is not None:
            ev.params.iouThrs = np.array(iou_thresholds, dtype=np.float64)
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


# ---------------------------------------------------------------- generated cases
def _gen(seed):
    return torch.Generator().manual_seed(seed)


def scene(n_images, per_image, num_classes, seed, size=(4.0, 60.0)):
    g = _gen(seed)
    targets = []
    for _ in range(n_images):
        xy = torch.rand(per_image, 2, generator=g) * 200
        wh = size[0] + torch.rand(per_image, 2, generator=g) * (size[1] - size[0])
        labels = torch.randint(0, num_classes, (per_image,), generator=g)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": labels})
    return targets


def jitter(targets, seed, amount=3.0, keep=1.0, extra=0):
    """Noisy detections of the targets: moved corners, random scores, some dropped, some extra."""
    g = _gen(seed)
    predictions = []
    for t in targets:
        n = len(t["boxes"])
        boxes = t["boxes"] + (torch.rand(n, 4, generator=g) - 0.5) * 2 * amount
        boxes = torch.cat([boxes[:, :2], torch.maximum(boxes[:, 2:], boxes[:, :2])], 1)
        mask = torch.rand(n, generator=g) < keep
        boxes, labels = boxes[mask], t["labels"][mask]
        if extra:
            xy = torch.rand(extra, 2, generator=g) * 200
            boxes = torch.cat([boxes, torch.cat([xy, xy + 20], 1)])
            labels = torch.cat([labels, torch.randint(0, 3, (extra,), generator=g)])
        predictions.append(
            {"boxes": boxes, "scores": torch.rand(len(boxes), generator=g), "labels": labels}
        )
    return predictions


def case_perfect():
    targets = scene(4, 5, 3, 0)
    scores = [torch.linspace(1, 0.5, len(t["boxes"])) for t in targets]
    return [dict(t, scores=s) for t, s in zip(targets, scores, strict=True)], targets


def case_all_miss():
    targets = scene(3, 4, 2, 1)
    predictions = [
        {"boxes": t["boxes"] + 500, "scores": torch.rand(len(t["boxes"]), generator=_gen(9)),
         "labels": t["labels"]}
        for t in targets
    ]  # fmt: skip
    return predictions, targets


def case_duplicates():
    targets = scene(3, 4, 2, 2)
    predictions = jitter(targets, 3, amount=1.0)
    doubled = [
        {k: torch.cat([p[k], p[k] if k != "scores" else p[k] * 0.9]) for k in p}
        for p in predictions
    ]
    return doubled, targets


def case_iou_near_half():
    # IoU exactly 0.5, just under and just over, at each of a few boxes
    gt = torch.tensor([[0.0, 0, 40, 40], [100, 100, 140, 140], [200, 0, 240, 40]])
    pred = torch.tensor([[0.0, 0, 40, 20], [100, 100, 140, 119.99], [200, 0, 240, 20.01]])
    targets = [{"boxes": gt, "labels": torch.tensor([0, 0, 1])}]
    predictions = [{"boxes": pred, "scores": torch.tensor([0.9, 0.8, 0.7]),
                    "labels": torch.tensor([0, 0, 1])}]  # fmt: skip
    return predictions, targets


def case_images_without_ground_truth():
    targets = scene(4, 3, 2, 4)
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    targets[3] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    return jitter(scene(4, 3, 2, 4), 5, extra=2), targets


def case_tied_scores():
    targets = scene(3, 5, 2, 6)
    predictions = jitter(targets, 7, amount=8.0, extra=3)
    for p in predictions:
        p["scores"] = torch.full_like(p["scores"], 0.5)
    return predictions, targets


def case_small_medium_large():
    # areas on both sides of and exactly at 32² and 96² (COCO's ranges are inclusive at both ends)
    sides = [(8, 8), (32, 32), (31, 33), (40, 40), (96, 96), (95, 97), (120, 150), (16, 64)]
    gt = torch.tensor([[300.0 * i, 0, 300 * i + w, h] for i, (w, h) in enumerate(sides)])
    targets = [{"boxes": gt, "labels": torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])}]
    predictions = jitter(targets, 8, amount=4.0, extra=4)
    return predictions, targets


def case_more_than_100_per_image_and_class():
    targets = scene(2, 30, 2, 10)
    g = _gen(11)
    predictions = []
    for t in targets:
        boxes = t["boxes"].repeat(6, 1) + (torch.rand(180, 4, generator=g) - 0.5) * 10
        boxes = torch.cat([boxes[:, :2], torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)], 1)
        labels = torch.zeros(180, dtype=torch.long)  # 180 detections of one class in one image
        predictions.append(
            {"boxes": boxes, "scores": torch.rand(180, generator=g), "labels": labels}
        )
    return predictions, targets


def case_no_detections_at_all():
    targets = scene(3, 3, 2, 12)
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
             "labels": torch.zeros(0, dtype=torch.long)}  # fmt: skip
    return [dict(empty) for _ in targets], targets


def case_random_mix():
    targets = scene(6, 6, 3, 13, size=(2.0, 150.0))
    return jitter(targets, 14, amount=12.0, keep=0.8, extra=3), targets


CASES = {
    "perfect": case_perfect,
    "all_miss": case_all_miss,
    "duplicates": case_duplicates,
    "iou_near_half": case_iou_near_half,
    "images_without_ground_truth": case_images_without_ground_truth,
    "tied_scores": case_tied_scores,
    "small_medium_large": case_small_medium_large,
    "more_than_100_per_image_and_class": case_more_than_100_per_image_and_class,
    "no_detections_at_all": case_no_detections_at_all,
    "random_mix": case_random_mix,
}


@pytest.mark.parametrize("name", CASES)
def test_coco_summary_equals_pycocotools(name, tmp_path):
    predictions, targets = CASES[name]()
    expected = pycocotools_reference(predictions, targets, tmp_path)
    result = mean_average_precision(predictions, targets)
    assert [result[k] for k in COCO_SUMMARY_KEYS] == pytest.approx(list(expected), abs=1e-6)


@pytest.mark.parametrize("name", ["random_mix", "images_without_ground_truth", "duplicates"])
def test_per_class_ap_equals_pycocotools_on_that_class_alone(name, tmp_path):
    predictions, targets = CASES[name]()
    result = mean_average_precision(predictions, targets)
    for label, ap in result["per_class"].items():
        expected = pycocotools_reference(predictions, targets, tmp_path, cat_ids=[label])[0]
        assert ap == pytest.approx(expected, abs=1e-6), label


def test_hand_values_of_the_simple_cases():
    # perfect detections: every AP and AR is 1 (no box of these scenes is large: -1 there)
    perfect = mean_average_precision(*case_perfect())
    assert perfect["map"] == perfect["map_50"] == perfect["mar_100"] == 1.0
    assert perfect["map_large"] == -1.0
    assert mean_average_precision(*case_all_miss())["map"] == 0.0
    assert mean_average_precision(*case_no_detections_at_all())["map"] == 0.0


def test_custom_iou_thresholds_equal_pycocotools(tmp_path):
    predictions, targets = case_random_mix()
    expected = pycocotools_reference(predictions, targets, tmp_path, iou_thresholds=[0.5, 0.6])
    result = mean_average_precision(predictions, targets, iou_thresholds=[0.5, 0.6])
    assert [result[k] for k in COCO_SUMMARY_KEYS] == pytest.approx(list(expected), abs=1e-6)
    assert result["map_75"] == -1.0  # 0.75 is not among the thresholds: pycocotools' -1


def test_iou_exactly_half_is_a_match_at_0_5_only():
    predictions, targets = case_iou_near_half()
    result = mean_average_precision(predictions, targets, iou_thresholds=[0.5])
    # class 0: the 0.5 box matches, the 0.49975 one misses -> AP 0.5 (101-point interpolation:
    # precision 1 up to recall 0.5, then 0); class 1: IoU 0.50025 matches -> 1
    assert result["per_class"] == {0: pytest.approx(51 / 101), 1: pytest.approx(1.0)}


def test_per_class_results_are_keyed_by_class_name_and_absent_classes_are_minus_one():
    predictions, targets = case_perfect()
    result = mean_average_precision(predictions, targets, class_names=["a", "b", "c", "d"])
    assert result["per_class"] == {"a": 1.0, "b": 1.0, "c": 1.0, "d": -1.0}


def test_detection_metric_accumulates_batches_like_one_call():
    predictions, targets = case_random_mix()
    metric = DetectionMetric()
    metric.update(predictions[:2], targets[:2])
    metric.update(predictions[2:], targets[2:])
    assert metric.compute() == mean_average_precision(predictions, targets)
    assert metric.compute_voc() == voc_ap(predictions, targets)
    metric.reset()
    assert metric.predictions == [] and metric.targets == []


# ---------------------------------------------------------------- VOC AP, by hand
def voc_hand_case():
    """One image, one class, 10 ground-truth boxes; 12 detections in descending score whose outcomes
    are T F T T F F T T T F T F (T: an exact copy of a box not yet found, F: a box far away)."""
    gt = torch.tensor([[20.0 * i, 0, 20 * i + 10, 10] for i in range(10)])
    outcomes = "TFTTFFTTTFTF"
    boxes, found = [], 0
    for outcome in outcomes:
        if outcome == "T":
            boxes.append(gt[found].tolist())
            found += 1
        else:
            boxes.append([500.0, 500, 510, 510])
    scores = torch.arange(len(outcomes), 0, -1).float()
    predictions = [{"boxes": torch.tensor(boxes), "scores": scores,
                    "labels": torch.zeros(len(outcomes), dtype=torch.long)}]  # fmt: skip
    return predictions, [{"boxes": gt, "labels": torch.zeros(10, dtype=torch.long)}]


def test_voc_11point_ap_hand_computed_with_recall_0_3_0_6_0_7_hit_exactly():
    # rank: 1   2   3   4   5   6   7   8   9   10   11   12
    # TP:   1   1   2   3   3   3   4   5   6   6    7    7      (npos 10)
    # prec: 1  1/2 2/3 3/4 3/5 1/2 4/7 5/8 2/3 3/5 7/11 7/12
    # max precision at recall >= 0, .1, ..., 1: 1, 1, 3/4, 3/4 (recall .3 at rank 4), 2/3, 2/3,
    # 2/3 (recall .6 at rank 9), 7/11 (recall .7 at rank 11), 0, 0, 0.
    # np.arange(0, 1.1, 0.1) would give 2/3, 7/11 and 0 at levels .3, .6, .7 instead.
    expected = (1 + 1 + 3 / 4 + 3 / 4 + 2 / 3 + 2 / 3 + 2 / 3 + 7 / 11) / 11
    result = voc_ap(*voc_hand_case(), method="11point")
    assert result["per_class"] == {0: pytest.approx(expected, abs=1e-12)}
    assert result["map"] == pytest.approx(expected, abs=1e-12)


def test_voc_all_point_ap_hand_computed():
    # VOC2010+: each TP adds recall 1/10 times the best precision at that rank or later:
    # ranks 1, 3, 4, 7, 8, 9, 11 -> 1, 3/4, 3/4, 2/3, 2/3, 2/3, 7/11
    expected = (1 + 3 / 4 + 3 / 4 + 2 / 3 + 2 / 3 + 2 / 3 + 7 / 11) / 10
    assert voc_ap(*voc_hand_case(), method="all")["map"] == pytest.approx(expected, abs=1e-12)


def test_voc_second_detection_of_a_taken_box_is_a_false_positive():
    gt = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]]),
        "labels": torch.tensor([0, 0]),
    }
    pred = {"boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10]]),
            "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 0, 0])}  # fmt: skip
    # T F T: precision 1, 1/2, 2/3 at recall .5, .5, 1 -> all-point AP (1 + 2/3) / 2 = 5/6
    # (were the duplicate a TP, the AP would be 1)
    assert voc_ap([pred], [gt], method="all")["map"] == pytest.approx(5 / 6, abs=1e-12)


def test_voc_iou_at_the_threshold_is_a_match():
    gt = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}
    pred = {
        "boxes": torch.tensor([[0.0, 0, 10, 5]]),
        "scores": torch.tensor([0.9]),
        "labels": torch.tensor([0]),
    }  # fmt: skip  (IoU exactly 0.5)
    assert voc_ap([pred], [gt], iou_threshold=0.5)["map"] == 1.0
    assert voc_ap([pred], [gt], iou_threshold=0.51)["map"] == 0.0


def test_voc_map_averages_classes_with_ground_truth():
    gt = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]),
        "labels": torch.tensor([0, 1]),
    }
    pred = {"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]]),
            "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 2])}  # fmt: skip
    result = voc_ap([pred], [gt])
    assert result["per_class"] == {0: 1.0, 1: 0.0}  # class 2 has no ground truth: left out
    assert result["map"] == 0.5


# ---------------------------------------------------------------- bad input
EMPTY_GT = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}


@pytest.mark.parametrize("metric", [mean_average_precision, voc_ap])
def test_empty_predictions_and_targets_are_an_error(metric):
    with pytest.raises(ValueError, match="no images"):
        metric([], [])


@pytest.mark.parametrize("metric", [mean_average_precision, voc_ap])
def test_predictions_without_targets_are_an_error(metric):
    predictions, _ = case_perfect()
    with pytest.raises(ValueError, match="4 predictions for 0 targets"):
        metric(predictions, [])


@pytest.mark.parametrize("metric", [mean_average_precision, voc_ap])
def test_no_ground_truth_box_anywhere_is_an_error(metric):
    predictions, _ = case_perfect()
    with pytest.raises(ValueError, match="no ground-truth boxes in any of 4 images"):
        metric(predictions, [EMPTY_GT] * 4)


def test_nan_score_is_an_error_naming_image_and_row():
    predictions, targets = case_perfect()
    predictions[2]["scores"] = predictions[2]["scores"].clone()
    predictions[2]["scores"][1] = float("nan")
    with pytest.raises(ValueError, match=r"predictions\[2\]\['scores'\]\[1\] is NaN"):
        mean_average_precision(predictions, targets)


def test_box_with_x2_below_x1_is_an_error_naming_image_and_box():
    predictions, targets = case_perfect()
    targets[1] = dict(targets[1], boxes=targets[1]["boxes"][:, [2, 1, 0, 3]])
    with pytest.raises(ValueError, match=r"targets\[1\]\['boxes'\]: box 0 .* expected x2 >= x1"):
        voc_ap(predictions, targets)


def test_missing_field_is_an_error():
    predictions, targets = case_perfect()
    del predictions[0]["scores"]
    with pytest.raises(ValueError, match=r"predictions\[0\] has no 'scores'"):
        mean_average_precision(predictions, targets)
