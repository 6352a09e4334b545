"""Detection metrics: COCO mAP through pycocotools, the notes' VOC 11-point AP, and a streaming
accumulator for evaluation loops.

Inputs, for every function here, are lists with one dict per image, in the same image order:

- a **prediction**: ``boxes`` (N, 4) xyxy pixels, ``scores`` (N,), ``labels`` (N,) integers;
- a **target**: ``boxes`` (M, 4) xyxy pixels, ``labels`` (M,) integers.

Labels are cnnkit's 0-based class indices; they are used as COCO category ids as they are.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_iou as _box_iou

from cnnkit.detection.boxes import check_boxes

Detections = Sequence[Mapping[str, torch.Tensor]]

# The order of COCOeval.stats for bounding boxes (COCOeval.summarize's _summarizeDets).
COCO_SUMMARY_KEYS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


def _check_inputs(predictions: Detections, targets: Detections, where: str) -> None:
    if len(predictions) == 0 and len(targets) == 0:
        raise ValueError(f"{where}: no images (predictions and targets are empty lists)")
    if len(predictions) != len(targets):
        raise ValueError(
            f"{where}: {len(predictions)} predictions for {len(targets)} targets; expected one "
            "prediction dict per target image, in the same order"
        )
    total_gt = 0
    for kind, items, fields in (
        ("predictions", predictions, ("boxes", "scores", "labels")),
        ("targets", targets, ("boxes", "labels")),
    ):
        for i, item in enumerate(items):
            missing = [f for f in fields if f not in item]
            if missing:
                raise ValueError(
                    f"{where}: {kind}[{i}] has no {', '.join(map(repr, missing))}; "
                    f"expected the fields {', '.join(fields)}"
                )
            boxes = item["boxes"]
            check_boxes(boxes, f"{where}: {kind}[{i}]['boxes']")
            for field in fields[1:]:
                value = item[field]
                if value.dim() != 1 or value.shape[0] != boxes.shape[0]:
                    raise ValueError(
                        f"{where}: {kind}[{i}][{field!r}] has shape {tuple(value.shape)}; expected "
                        f"({boxes.shape[0]},), one per box"
                    )
            if kind == "predictions" and torch.isnan(item["scores"]).any():
                row = int(torch.isnan(item["scores"]).nonzero()[0])
                raise ValueError(f"{where}: predictions[{i}]['scores'][{row}] is NaN")
            if item["labels"].is_floating_point() or (item["labels"] < 0).any():
                raise ValueError(
                    f"{where}: {kind}[{i}]['labels'] is {item['labels'].tolist()}; expected "
                    "non-negative integers"
                )
            if kind == "targets":
                total_gt += boxes.shape[0]
    if total_gt == 0:
        raise ValueError(
            f"{where}: the targets hold no ground-truth boxes in any of {len(targets)} images; "
            "average precision is undefined without them (pycocotools would report -1)"
        )


def _xywh(boxes: torch.Tensor) -> np.ndarray:
    # float64 before subtracting, so w and h (and COCO's area w·h) are the exact float64 values of
    # the float32 corners, whoever computes them.
    b = boxes.detach().cpu().double().numpy()
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def to_coco(
    predictions: Detections, targets: Detections, categories: Sequence[int] = ()
) -> tuple[COCO, COCO]:
    """Build pycocotools' ground-truth and result ``COCO`` objects in memory (no files).

    Image ``i`` of the lists gets id ``i + 1`` and annotation ids start at 1 (COCOeval treats a
    matched id 0 as "unmatched"); ground-truth ``area`` is the box's w·h, as ``loadRes`` computes it
    for results; ``iscrowd`` is 0. The categories are the labels found in either list plus
    ``categories``. Results go through ``COCO.loadRes`` (its own conventions), except that no
    detections at all builds an empty result set, which ``loadRes`` cannot.
    """
    labels = set(int(c) for c in categories)
    for item in (*predictions, *targets):
        labels.update(int(c) for c in item["labels"].tolist())
    images = [{"id": i + 1} for i in range(len(targets))]
    category_list = [{"id": c, "name": str(c)} for c in sorted(labels)]
    annotations: list[dict] = []
    for i, target in enumerate(targets):
        for box, label in zip(_xywh(target["boxes"]), target["labels"].tolist(), strict=True):
            x, y, w, h = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(label),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    results = []
    for i, prediction in enumerate(predictions):
        scores = prediction["scores"].detach().cpu().double().tolist()
        labels_i = prediction["labels"].tolist()
        for box, score, label in zip(_xywh(prediction["boxes"]), scores, labels_i, strict=True):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": int(label),
                    "bbox": [float(v) for v in box],
                    "score": score,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": category_list}
        gt.createIndex()
        if results:
            dt = gt.loadRes(results)
        else:
            dt = COCO()
            dt.dataset = {"images": list(images), "annotations": [], "categories": category_list}
            dt.createIndex()
    return gt, dt


def mean_average_precision(
    predictions: Detections,
    targets: Detections,
    iou_thresholds: Literal["coco"] | Sequence[float] = "coco",
    class_names: Sequence[str] | None = None,
) -> dict[str, float | dict]:
    """COCO's detection summary, computed by pycocotools' ``COCOeval`` (Lin et al., "Microsoft COCO:
    Common Objects in Context", ECCV 2014), so the numbers are pycocotools' own.

    Conventions, all pycocotools': IoU thresholds 0.5:0.05:0.95 as ``np.linspace`` in float64
    (``iou_thresholds="coco"``) or the given list; at most 1/10/100 detections *per image and per
    class* (the highest scoring); area ranges small [0, 32²], medium [32², 96²], large [96², 1e10],
    inclusive at both ends, on the box's w·h; equal scores keep the input order (a stable sort);
    images without detections or without ground truth take part as they are; a value that has
    nothing to average (no ground truth in that area range, ``map_50`` when 0.5 is not among the
    thresholds) is -1.

    Args:
        predictions, targets: one dict per image, see the module docstring.
        iou_thresholds: ``"coco"`` or a list of thresholds.
        class_names: names of the labels 0, 1, …; the per-class results are keyed by them (by the
            integer label otherwise).

    Returns:
        the twelve values of ``COCOeval.stats`` under ``COCO_SUMMARY_KEYS`` (``map`` is AP at
        IoU=.50:.95, area all, 100 detections; ``mar_100`` the recall likewise), plus ``per_class``:
        {label or name: AP at the thresholds, area all, 100 detections}, -1 for a class without
        ground truth (pycocotools leaves its precision at -1).

    Raises:
        ValueError: mismatched lists, malformed dicts, NaN scores, x2 < x1, or no ground-truth box
            in any image (AP is undefined; pycocotools would report -1 everywhere).
    """
    _check_inputs(predictions, targets, "mean_average_precision")
    categories = range(len(class_names)) if class_names is not None else ()
    gt, dt = to_coco(predictions, targets, categories)
    evaluator = COCOeval(gt, dt, iouType="bbox")
    if iou_thresholds != "coco":
        thresholds = np.asarray(list(iou_thresholds), dtype=np.float64)
        if (
            thresholds.ndim != 1
            or len(thresholds) == 0
            or not ((thresholds >= 0) & (thresholds <= 1)).all()
        ):
            raise ValueError(
                f"mean_average_precision: iou_thresholds={iou_thresholds!r}; expected 'coco' or "
                "a non-empty list of values in [0, 1]"
            )
        evaluator.params.iouThrs = thresholds
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    summary: dict[str, float | dict] = {
        key: float(value) for key, value in zip(COCO_SUMMARY_KEYS, evaluator.stats, strict=True)
    }
    # precision[T, R, K, A, M]: IoU thresholds, recall points, categories, area ranges, maxDets.
    # The per-class AP averages it as summarize() does for the mean: area "all", maxDets 100,
    # entries of -1 (nothing to measure) left out, -1 when none is left.
    precision = evaluator.eval["precision"]
    area_all = evaluator.params.areaRngLbl.index("all")
    per_class: dict[int | str, float] = {}
    for k, category in enumerate(int(c) for c in evaluator.params.catIds):
        values = precision[:, :, k, area_all, -1]
        values = values[values > -1]
        key = (
            class_names[category]
            if class_names is not None and category < len(class_names)
            else category
        )
        per_class[key] = float(values.mean()) if values.size else -1.0
    summary["per_class"] = per_class
    return summary


def precision_recall_curves(
    predictions: Detections, targets: Detections, iou_threshold: float = 0.5
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per-class precision-recall curves at one IoU threshold, pycocotools' own: ``COCOeval``'s
    interpolated precision (the best precision at this recall or any higher) at its 101 recall
    levels 0, 0.01, …, 1, area "all", 100 detections per image and class. Recall levels the
    detections never reach have precision 0.

    Returns:
        ``{label: (recall (101,), precision (101,))}`` for every label with ground truth.
    """
    _check_inputs(predictions, targets, "precision_recall_curves")
    gt, dt = to_coco(predictions, targets)
    evaluator = COCOeval(gt, dt, iouType="bbox")
    evaluator.params.iouThrs = np.asarray([iou_threshold], dtype=np.float64)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # T x R x K x A x M
    area_all = evaluator.params.areaRngLbl.index("all")
    recall = np.asarray(evaluator.params.recThrs, dtype=np.float64)
    with_gt = {int(a["category_id"]) for a in gt.dataset["annotations"]}
    curves = {}
    for k, category in enumerate(int(c) for c in evaluator.params.catIds):
        if category in with_gt:
            curves[category] = (recall, precision[0, :, k, area_all, -1].astype(np.float64))
    return curves


def voc_ap(
    predictions: Detections,
    targets: Detections,
    iou_threshold: float = 0.5,
    method: Literal["11point", "all"] = "11point",
) -> dict[str, float | dict[int, float]]:
    """PASCAL VOC average precision per class and its mean (Everingham et al., "The PASCAL Visual
    Object Classes (VOC) Challenge", IJCV 2010).

    ``method="11point"`` is the notes' AP (VOC2007): the maximum precision at recall >= 0, 0.1, …,
    1, averaged over the 11 levels. ``"all"`` is VOC2010+'s area under the precision envelope (the
    precision made non-increasing in recall) at every recall step.

    Written by hand because no maintained library computes the 11-point AP with exact k/10 levels:
    the VOC devkit's ports use ``np.arange(0, 1.1, 0.1)``, whose 0.30000000000000004,
    0.6000000000000001 and 0.7000000000000001 miss a recall of exactly 0.3, 0.6 or 0.7; here the
    test "recall >= k/10" is done in integers, 10·TP >= k·npos. Matching follows the devkit:
    detections of a class in descending score (ties in input order), each matched to the ground
    truth of its image and class with the highest IoU (continuous coordinates, no "+1"); IoU >=
    ``iou_threshold`` to a free box is a true positive, which takes the box; a detection whose best
    box is already taken, or below the threshold, is a false positive. There are no "difficult" flags.

    Returns:
        ``{"map": mean over the classes that have ground truth, "per_class": {label: AP}}``;
        classes with detections but no ground truth are left out (their recall is undefined).
    """
    _check_inputs(predictions, targets, "voc_ap")
    if method not in ("11point", "all"):
        raise ValueError(f"voc_ap: method={method!r}; expected '11point' or 'all'")
    classes = sorted({int(c) for t in targets for c in t["labels"].tolist()})
    per_class: dict[int, float] = {}
    for label in classes:
        gt_boxes = [t["boxes"][t["labels"] == label].detach().cpu().float() for t in targets]
        npos = sum(len(b) for b in gt_boxes)
        scores, images, boxes = [], [], []
        for i, p in enumerate(predictions):
            mine = p["labels"] == label
            scores.append(p["scores"][mine].detach().cpu().double())
            boxes.append(p["boxes"][mine].detach().cpu().float())
            images.append(torch.full((int(mine.sum()),), i, dtype=torch.long))
        score = torch.cat(scores)
        order = torch.sort(score, descending=True, stable=True).indices
        image_of = torch.cat(images)[order].tolist()
        all_boxes = torch.cat(boxes)[order] if len(order) else torch.zeros(0, 4)
        taken = [torch.zeros(len(b), dtype=torch.bool) for b in gt_boxes]
        is_tp = np.zeros(len(order), dtype=bool)
        for d, image in enumerate(image_of):
            if len(gt_boxes[image]) == 0:
                continue
            ious = _box_iou(all_boxes[d : d + 1], gt_boxes[image])[0]  # inputs checked above
            best = int(ious.argmax())
            if float(ious[best]) >= iou_threshold and not taken[image][best]:
                taken[image][best] = True
                is_tp[d] = True
        tp = np.cumsum(is_tp)
        fp = np.cumsum(~is_tp)
        precision = tp / np.maximum(tp + fp, 1)
        if method == "11point":
            levels = []
            for k in range(11):
                reached = 10 * tp >= k * npos  # recall >= k/10, exactly
                levels.append(float(precision[reached].max()) if reached.any() else 0.0)
            ap = sum(levels) / 11
        else:
            # the envelope: the best precision at this recall or any higher one
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            ap = float(envelope[is_tp].sum() / npos)  # recall grows by 1/npos at each TP
        per_class[label] = ap
    return {"map": float(np.mean(list(per_class.values()))), "per_class": per_class}


class DetectionMetric:
    """Accumulates per-image predictions and targets over an evaluation loop, then computes the COCO
    summary (``mean_average_precision``) and the VOC AP (``voc_ap``) on all of them.

    ``update`` detaches the tensors and moves them to the CPU, so device memory is not held.
    """

    def __init__(
        self,
        iou_thresholds: Literal["coco"] | Sequence[float] = "coco",
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.iou_thresholds = iou_thresholds
        self.class_names = class_names
        self.predictions: list[dict[str, torch.Tensor]] = []
        self.targets: list[dict[str, torch.Tensor]] = []

    def reset(self) -> None:
        self.predictions, self.targets = [], []

    def update(self, predictions: Detections, targets: Detections) -> None:
        """Append one batch: lists of per-image dicts (see the module docstring)."""
        if len(predictions) != len(targets):
            raise ValueError(
                f"DetectionMetric.update: {len(predictions)} predictions for {len(targets)} "
                "targets; expected one prediction dict per target image"
            )
        for kind, items, store in (
            ("predictions", predictions, self.predictions),
            ("targets", targets, self.targets),
        ):
            fields = ("boxes", "scores", "labels") if kind == "predictions" else ("boxes", "labels")
            for i, item in enumerate(items):
                missing = [f for f in fields if f not in item]
                if missing:
                    raise ValueError(
                        f"DetectionMetric.update: {kind}[{i}] has no "
                        f"{', '.join(map(repr, missing))}; expected the fields {', '.join(fields)}"
                    )
                store.append({f: item[f].detach().cpu() for f in fields})

    def compute(self) -> dict[str, float | dict]:
        """The COCO summary of everything seen since the last ``reset``."""
        return mean_average_precision(
            self.predictions, self.targets, self.iou_thresholds, self.class_names
        )

    def compute_voc(
        self, iou_threshold: float = 0.5, method: Literal["11point", "all"] = "11point"
    ) -> dict[str, float | dict[int, float]]:
        """The VOC AP of everything seen since the last ``reset``."""
        return voc_ap(self.predictions, self.targets, iou_threshold, method)
