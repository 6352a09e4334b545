"""Detection's view (``cnnkit.tasks.detect``).

- **ONNX**: the graph is the model, the raw grid (N, B, S_h, S_w, 5 + K) out; decoding and NMS
  stay outside it, in ``task.decode`` (``cnnkit.detection.postprocess``), exactly the PyTorch path's.
  The decoding needs the model's anchors and stride, so the file records them (``cnnkit.anchors``,
  (w, h) pixels of the input, JSON; ``cnnkit.stride``, pixels per cell) and
  :meth:`DetectView.prepare_task` gives them to the task rebuilt from the file.
- **Drawing**: the detections scoring at least :data:`SCORE_THRESHOLD`, boxes labelled
  "class score" in their class's colour (``viz.detection.draw_detections``, as ``cnnkit detect``
  and the run's ``detections.png`` draw them), on the image enlarged to ≥ 256 px.
- **Report**: the COCO summary (pycocotools: ``map``, ``map_50``, ``map_75``, small / medium /
  large, ``mar_*``), the VOC 11-point mAP@0.5, and per class AP@[.5:.95] and VOC AP@0.5.
- **App**: the detections above the threshold as a list (``id="result"``, one
  ``<li class="detection">`` each, best first), their count (``id="count"``) and the drawn image.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cnnkit.deploy.views import (
    Table,
    TaskView,
    drawn_image_html,
    enlarge_factor,
    metric_rows,
    register_view,
)
from cnnkit.tasks.detect import DETECTION_KEYS

#: detections drawn and listed score at least this (``cnnkit detect``'s default, the report grid's)
SCORE_THRESHOLD = 0.3
#: drawn images are enlarged (nearest, by an integer factor) to at least this side, in pixels
DRAW_SIDE = 256


class DetectorGeometry(nn.Module):
    """What ``Detect.decode`` reads from its model, without the model: the ``anchors`` (B, 2),
    (w, h) in input pixels, and the ``stride`` in pixels per cell (an ONNX file's, from its
    metadata). ``Detect.setup`` takes it in place of the ``YOLODetector``."""

    def __init__(self, anchors: Sequence[Sequence[float]], stride: int) -> None:
        super().__init__()
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32))
        self.stride = int(stride)


@register_view
class DetectView(TaskView):
    task = "detect"
    output_names = ("grid",)
    postprocess = (
        "none in the graph: the raw grid (N, B, S_h, S_w, 5 + num_classes); outside it cnnkit "
        "decodes it with the task (cnnkit.detection.postprocess): sigmoid centre offsets in each "
        "cell, sizes = anchors (cnnkit.anchors, w h px) x exp, cells of cnnkit.stride px; score = "
        "sigmoid objectness x softmax class probability; per-class NMS (cnnkit.task_options: "
        "score_threshold, nms_iou, max_detections)"
    )

    def export_metadata(self, model: nn.Module) -> dict[str, str]:
        model = getattr(model, "module", model)
        anchors, stride = getattr(model, "anchors", None), getattr(model, "stride", None)
        if not isinstance(anchors, torch.Tensor) or not isinstance(stride, int):
            raise ValueError(
                f"detect: the model ({type(model).__name__}) has no anchors tensor and integer "
                "stride; expected a YOLO detector (models/yolo.py)"
            )
        return {"anchors": json.dumps(anchors.tolist()), "stride": str(stride)}

    def prepare_task(self, task: Any, metadata: dict[str, str]) -> None:
        missing = [key for key in ("anchors", "stride") if key not in metadata]
        if missing:
            raise ValueError(
                f"metadata field 'cnnkit.{missing[0]}' is missing; a detect export records the "
                "anchors and the stride its decoding needs"
            )
        task.setup(DetectorGeometry(json.loads(metadata["anchors"]), int(metadata["stride"])))

    def draw(
        self,
        images: torch.Tensor,
        decoded: Sequence[dict[str, torch.Tensor]],
        class_names: Sequence[str],
    ) -> torch.Tensor:
        """Each image (uint8 (N, C, H, W) at the model's input size) enlarged ×f to ≥ 256 px with
        its detections scoring ≥ :data:`SCORE_THRESHOLD` drawn."""
        from cnnkit.viz.detection import draw_detections

        factor = enlarge_factor(images, DRAW_SIDE)
        big = images.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
        drawn = []
        for image, found in zip(big, decoded, strict=True):
            scaled = {**found, "boxes": found["boxes"].detach().float().cpu() * factor}
            drawn.append(draw_detections(image, scaled, class_names, SCORE_THRESHOLD))
        return torch.stack(drawn)

    def tables(self, metrics: dict[str, Any], class_names: Sequence[str]) -> list[Table]:
        summary = {
            f"test_{k}": metrics[f"test_{k}"] for k in DETECTION_KEYS if f"test_{k}" in metrics
        }
        tables = [
            Table(
                "COCO summary (pycocotools; AP and AR at IoU .50:.95 unless named)",
                ["metric", "value"],
                metric_rows(summary),
            )
        ]
        others = {k: v for k, v in metrics.items() if k not in summary}
        tables.append(
            Table("VOC 11-point mAP@0.5 and the loss", ["metric", "value"], metric_rows(others))
        )
        per_class = metrics.get("per_class_ap")
        voc = metrics.get("per_class_voc_ap_50", {})
        if isinstance(per_class, dict):
            rows = [
                [str(name), _ap(ap), _ap(voc.get(name, -1.0))] for name, ap in per_class.items()
            ]
            tables.append(
                Table(
                    "AP per class (-: no ground truth in the test split)",
                    ["class", "AP@[.5:.95]", "VOC AP@0.5"],
                    rows,
                )
            )
        return tables

    def result_html(
        self,
        decoded: dict[str, torch.Tensor],
        class_names: Sequence[str],
        task: Any,
        image: torch.Tensor | None = None,
    ) -> str:
        keep = decoded["scores"] >= SCORE_THRESHOLD
        items = []
        for box, score, label in zip(
            decoded["boxes"][keep].tolist(),
            decoded["scores"][keep].tolist(),
            decoded["labels"][keep].tolist(),
            strict=True,
        ):
            name = html.escape(class_names[label])
            corners = ", ".join(f"{v:.1f}" for v in box)
            items.append(
                f'<li class="detection" data-class="{name}" data-score="{score:.4f}">'
                f'<b class="name">{name}</b> <span class="p">{score:.2%}</span> '
                f'<span class="xyxy">({corners})</span></li>'
            )
        count = len(items)
        parts = [
            f'<p id="count">{count} detection{"" if count == 1 else "s"} scoring ≥ '
            f"{SCORE_THRESHOLD:.2f} (boxes: xyxy pixels of the input)</p>",
            f'<ol id="result">{"".join(items)}</ol>',
        ]
        if image is not None:
            drawn = self.draw(image.unsqueeze(0), [decoded], class_names)[0]
            parts.append(drawn_image_html(drawn, f"{count} detections drawn"))
        return "".join(parts)


def _ap(value: Any) -> str:
    """An AP cell: pycocotools' -1 (no ground truth of the class) as ``-``."""
    return "-" if not isinstance(value, (int, float)) or value < 0 else f"{value:.4f}"
