"""Object detection with a YOLO-style grid (Redmon et al., "You Only Look Once", CVPR 2016; Redmon &
Farhadi, "YOLO9000", CVPR 2017; the notes, ch. 14, "Object Detection").

Model-output contract (``cnnkit.models.yolo``): raw grids (N, B, S_h, S_w, 5 + K). Targets: one dict
per image, ``boxes`` (M, 4) xyxy pixels of the model's input and ``labels`` (M,) int64. Decoded: one
dict per image, ``boxes``, ``scores``, ``labels`` by descending score (``detection.postprocess``).

What this task adds to the library in ``cnnkit.detection``:

- **anchors from the data**: :meth:`Detect.model_options_from_data` runs YOLOv2's IoU K-Means
  (``kmeans_anchors``) on the training boxes' sizes; the anchors become the model option
  ``anchors``, so ``config.json`` records them and ``create_model`` rebuilds the same model for
  ``evaluate``, ``predict`` and ``detect``;
- **the loss** ``yolo_loss`` with the anchors and stride of the model it trains (taken in
  ``setup``), and the targets scaled by the model's ``input_scale`` when multi-scale training
  resized the batch (the boxes are in pixels of the input as the data gave it, the grid is the
  resized one);
- **streaming evaluation**: each batch is postprocessed on the device and only the per-image
  detections and targets go to the host; ``compute`` gives pycocotools' COCO summary (``map``,
  ``map_50``, …) and the VOC 11-point mAP (``voc_map_50``) over everything; under DDP the per-image
  lists are gathered from every process (``all_gather_object``), since averages of per-process mAPs
  are not the mAP;
- **the report**: COCO summary, VOC mAP, per-class AP, a precision-recall plot per class and a grid
  of test scenes with their detections drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from cnnkit.detection.metrics import COCO_SUMMARY_KEYS
from cnnkit.tasks.base import Reduce, StreamingMetric, SumMetric, Task, _identity, ratio
from cnnkit.tasks.registry import register_task

if TYPE_CHECKING:
    from cnnkit.data.datasets import DataMeta, ImageData

#: the COCO summary keys (pycocotools' order), as the evaluation reports them
DETECTION_KEYS = COCO_SUMMARY_KEYS
#: how many test scenes ``report`` draws with their detections
DRAWN_SCENES = 8

Detections = list[dict[str, torch.Tensor]]


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class LossParts(SumMetric):
    """The training loss parts (``box``, ``obj``, ``cls``) averaged over the images, read from the
    task's last ``loss`` call (the trainer calls ``loss`` then ``update`` on the same batch), so the
    loss is not computed twice."""

    names = ("images", "box", "obj", "cls")

    def __init__(self, last_parts: Callable[[], dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.last_parts = last_parts

    def update(self, output: Any, target: Any) -> None:
        parts, n = self.last_parts(), len(target)
        self.add(images=float(n), **{k: parts[k].detach() * n for k in ("box", "obj", "cls")})

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        n = totals["images"]
        return {f"loss_{k}": ratio(totals[k], n) for k in ("box", "obj", "cls")}


class DetectionEval(StreamingMetric):
    """Evaluation loss and mAP, streamed.

    ``update`` computes the loss on the device (summed, no host sync) and postprocesses the batch
    there; the detections (at most ``max_detections`` per image) and the targets are then copied to
    the CPU, one small dict per image: host memory grows with the number of images, not with the
    raw grids. ``compute(reduce)`` sums the loss over processes with ``reduce`` and, under DDP,
    gathers every process's per-image lists before computing ``mean_average_precision`` (the COCO
    summary, pycocotools') and ``voc_ap`` (11-point, IoU 0.5) once over all of them.
    """

    def __init__(
        self,
        loss: Callable[[Any, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]],
        postprocess: Callable[[torch.Tensor], Detections],
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.loss, self.postprocess, self.class_names = loss, postprocess, class_names
        self.reset()

    def reset(self) -> None:
        self._loss: torch.Tensor | None = None
        self.predictions: Detections = []
        self.targets: Detections = []
        #: every process's predictions and targets as of the last ``compute`` (for the report)
        self.all_predictions: Detections = []
        self.all_targets: Detections = []
        #: the last ``compute``'s full results (per-class APs included), for the report
        self.coco: dict[str, Any] = {}
        self.voc: dict[str, Any] = {}

    def update(self, output: torch.Tensor, target: Sequence[dict[str, torch.Tensor]]) -> None:
        loss, _ = self.loss(output, target)
        row = torch.stack([loss.detach().double() * len(target), loss.new_tensor(len(target))])
        self._loss = row.double() if self._loss is None else self._loss + row
        for detections in self.postprocess(output):
            self.predictions.append({k: v.cpu() for k, v in detections.items()})
        self.targets.extend(
            {"boxes": t["boxes"].float().cpu(), "labels": t["labels"].long().cpu()} for t in target
        )

    def gathered(self) -> tuple[Detections, Detections]:
        """Every process's (predictions, targets), in rank order (this process's alone without DDP)."""
        if not _distributed():
            return self.predictions, self.targets
        parts: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, (self.predictions, self.targets))
        return (
            [p for predictions, _ in parts for p in predictions],
            [t for _, targets in parts for t in targets],
        )

    def compute(self, reduce: Reduce = _identity) -> dict[str, float]:
        from cnnkit.detection import mean_average_precision, voc_ap

        sums = self._loss if self._loss is not None else torch.zeros(2, dtype=torch.float64)
        if _distributed() and self._loss is None:  # a process that saw nothing still joins in
            sums = sums.to(_collective_device())
        total, images = reduce(sums).tolist()
        predictions, targets = self.all_predictions, self.all_targets = self.gathered()
        values = {"loss": ratio(total, images)}
        if not any(len(t["boxes"]) for t in targets):  # nothing to find: AP is undefined
            self.coco, self.voc = {}, {}
            return {**values, **dict.fromkeys(DETECTION_KEYS, math.nan), "voc_map_50": math.nan}
        self.coco = mean_average_precision(predictions, targets, class_names=self.class_names)
        self.voc = voc_ap(predictions, targets, 0.5, "11point")
        values.update({k: _number(self.coco[k]) for k in DETECTION_KEYS})
        values["voc_map_50"] = _number(self.voc["map"])
        return values


def _number(value: Any) -> float:
    assert isinstance(value, float)  # the summary's scalar entries (per_class is the dict)
    return value


def _collective_device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@register_task
class Detect(Task):
    """YOLO-style detection: ``yolo_loss`` (CIoU box loss by default, BCE objectness, cross-entropy
    classes), COCO mAP and VOC 11-point mAP, anchors by IoU K-Means on the training boxes.

    Options (recorded in ``config.json``): the loss's ``box_loss``, ``box_weight``, ``obj_weight``,
    ``noobj_weight``, ``cls_weight``, ``ignore_iou``; ``num_anchors`` for the K-Means;
    ``score_threshold``, ``nms_iou``, ``max_detections``, ``multi_label`` for decoding (the low
    default threshold keeps the low-scoring tail mAP needs; ``multi_label``, on by default, proposes
    a box under every class scoring above it, as Ultralytics' validation does; ``cnnkit detect``
    draws each box's best label above its own threshold).
    """

    name = "detect"
    model_task = "detect"
    monitor = "val_map_50"
    monitor_mode = "max"
    progress_keys: ClassVar[dict[str, str]] = {"loss_box": "box", "loss_obj": "obj"}

    def __init__(
        self,
        box_loss: str = "ciou",
        box_weight: float = 5.0,
        obj_weight: float = 1.0,
        noobj_weight: float = 0.5,
        cls_weight: float = 1.0,
        ignore_iou: float | None = 0.5,
        num_anchors: int = 5,
        score_threshold: float = 0.01,
        nms_iou: float = 0.5,
        max_detections: int = 100,
        multi_label: bool = True,
    ) -> None:
        if box_loss not in ("ciou", "giou", "mse"):
            raise ValueError(f"box_loss: expected 'ciou', 'giou' or 'mse', got {box_loss!r}")
        if num_anchors < 1:
            raise ValueError(f"num_anchors: expected a positive integer, got {num_anchors}")
        self.box_loss, self.box_weight = box_loss, box_weight
        self.obj_weight, self.noobj_weight, self.cls_weight = obj_weight, noobj_weight, cls_weight
        self.ignore_iou, self.num_anchors = ignore_iou, num_anchors
        self.score_threshold, self.nms_iou = score_threshold, nms_iou
        self.max_detections, self.multi_label = max_detections, multi_label
        self._model: nn.Module | None = None
        self._last_parts: dict[str, torch.Tensor] = {}

    def options(self) -> dict[str, Any]:
        return {
            "box_loss": self.box_loss,
            "box_weight": self.box_weight,
            "obj_weight": self.obj_weight,
            "noobj_weight": self.noobj_weight,
            "cls_weight": self.cls_weight,
            "ignore_iou": self.ignore_iou,
            "num_anchors": self.num_anchors,
            "score_threshold": self.score_threshold,
            "nms_iou": self.nms_iou,
            "max_detections": self.max_detections,
            "multi_label": self.multi_label,
        }

    # ---- model and data
    def model_options_from_data(
        self, data: ImageData, model: str | None = None, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Model options the training data decides: ``anchors``, YOLOv2's IoU K-Means (k =
        ``num_anchors``, fewer when there are fewer boxes) on the (w, h) of every training box,
        rounded to 0.01 px. ``cnnkit train`` adds them to the model options it records."""
        from cnnkit.detection import kmeans_anchors

        _, targets = data.train
        sizes = [t["boxes"][:, 2:] - t["boxes"][:, :2] for t in targets if len(t["boxes"])]
        if not sizes:
            raise ValueError(f"{data.name}: the training split has no boxes to find anchors in")
        box_sizes = torch.cat(sizes).double()
        anchors, _ = kmeans_anchors(box_sizes, k=min(self.num_anchors, len(box_sizes)))
        return {"anchors": [[round(float(v), 2) for v in anchor] for anchor in anchors]}

    def setup(self, model: nn.Module) -> None:
        # The loss and the decoding need the model's anchors, stride and multi-scale input_scale.
        self._model = getattr(model, "module", model)

    def _geometry(self) -> tuple[torch.Tensor, int, tuple[float, float]]:
        """The model's anchors, stride and last ``input_scale`` (multi-scale training)."""
        if self._model is None:
            raise RuntimeError(
                "detect: setup(model) was not called; the task takes the anchors and the stride "
                "from the model it trains (the Trainer calls setup; so do evaluate and detect)"
            )
        anchors = self._model.anchors
        assert isinstance(anchors, torch.Tensor)
        scale = getattr(self._model, "input_scale", (1.0, 1.0))
        stride = self._model.stride
        assert isinstance(stride, int)
        return anchors, stride, (float(scale[0]), float(scale[1]))

    # ---- training
    def loss(
        self, output: torch.Tensor, target: Sequence[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from cnnkit.detection import yolo_loss

        anchors, stride, (scale_y, scale_x) = self._geometry()
        if (scale_y, scale_x) != (1.0, 1.0):
            # multi-scale training resized the batch: the grid is the resized image's, so the
            # boxes (pixels of the input as given) must be too
            factor = output.new_tensor([scale_x, scale_y, scale_x, scale_y], dtype=torch.float32)
            target = [{**t, "boxes": t["boxes"] * factor} for t in target]
        total, parts = yolo_loss(
            output, target, anchors, stride,
            box_loss=self.box_loss,  # type: ignore[arg-type]
            box_weight=self.box_weight, obj_weight=self.obj_weight,
            noobj_weight=self.noobj_weight, cls_weight=self.cls_weight,
            ignore_iou=self.ignore_iou,
        )  # fmt: skip
        self._last_parts = parts
        return total, parts

    def train_metrics(self) -> LossParts:
        return LossParts(lambda: self._last_parts)

    def eval_metrics(self, class_names: Sequence[str] | None = None) -> DetectionEval:
        return DetectionEval(self.loss, self.decode, class_names)

    # ---- inference
    def decode(self, output: torch.Tensor, multi_label: bool | None = None) -> Detections:
        """Raw grids → per-image ``boxes`` (xyxy input pixels), ``scores``, ``labels``;
        ``multi_label`` overrides the task's."""
        from cnnkit.detection import postprocess

        anchors, stride, _ = self._geometry()
        multi = self.multi_label if multi_label is None else multi_label
        return postprocess(
            output, anchors, stride, self.score_threshold, self.nms_iou, self.max_detections, multi
        )

    def format_prediction(
        self, decoded: dict[str, torch.Tensor], class_names: Sequence[str], top: int = 3
    ) -> list[str]:
        """The ``top`` best detections: class, score and box (x1, y1, x2, y2 in input pixels)."""
        lines = []
        boxes, scores = decoded["boxes"][:top].tolist(), decoded["scores"][:top].tolist()
        for box, score, label in zip(boxes, scores, decoded["labels"][:top].tolist(), strict=True):
            corners = ", ".join(f"{v:.1f}" for v in box)
            lines.append(f"{class_names[label]:<14s} {score:7.2%}  ({corners})")
        return lines or ["no detection"]

    # ---- the end of a run
    def report(
        self, trainer: Any, test: Any, meta: DataMeta, run_dir: Path | None
    ) -> dict[str, Any]:
        """Test loss, COCO summary, VOC 11-point mAP and per-class APs; with ``run_dir`` also the
        precision-recall curves per class (IoU 0.5) and a grid of test scenes with their
        detections drawn (scores >= 0.3)."""
        names = list(meta.class_names)
        metric = self.eval_metrics(names)
        scores = trainer.evaluate(test, metric=metric)
        metrics: dict[str, Any] = {f"test_{k}": v for k, v in scores.items()}
        if metric.coco:
            metrics["per_class_ap"] = dict(metric.coco["per_class"])
            metrics["per_class_voc_ap_50"] = {
                names[label] if label < len(names) else str(label): ap
                for label, ap in metric.voc["per_class"].items()
            }
        if run_dir is not None and metric.coco:
            from cnnkit.detection.metrics import precision_recall_curves
            from cnnkit.train import rundir
            from cnnkit.viz.detection import draw_detection_grid, plot_precision_recall

            curves = precision_recall_curves(metric.all_predictions, metric.all_targets, 0.5)
            plot_precision_recall(curves, names, run_dir / rundir.PRECISION_RECALL_PLOT)
            x, _ = next(iter(test))
            x = x[:DRAWN_SCENES]
            detections = trainer.predict(x)
            draw_detection_grid(
                meta.to_display(x), detections, names, run_dir / rundir.DETECTIONS_PLOT
            )
        return metrics

    def print_report(self, metrics: dict[str, Any], meta: DataMeta) -> None:
        print(f"  loss  {metrics['test_loss']:.4f}\n")
        print("  COCO summary (pycocotools)")
        for key in DETECTION_KEYS:
            print(f"    {key:<12s} {metrics[f'test_{key}']:.4f}")
        print(f"  VOC 11-point mAP@0.5  {metrics['test_voc_map_50']:.4f}\n")
        per_class = metrics.get("per_class_ap", {})
        voc = metrics.get("per_class_voc_ap_50", {})
        if per_class:
            width = max(len(str(n)) for n in per_class)
            print(f"  {'class':<{width}}  AP@[.5:.95]  VOC AP@0.5   (-: no ground truth)")
            for name, ap in per_class.items():
                coco_ap = f"{ap:11.4f}" if ap >= 0 else f"{'-':>11s}"
                voc_ap = f"{voc[name]:10.4f}" if name in voc else f"{'-':>10s}"
                print(f"  {name!s:<{width}}  {coco_ap}  {voc_ap}")

    def history_metric(self) -> str:
        return "map_50"
