"""Classification + localization's view (``cnnkit.tasks.localize``).

- **ONNX**: the model returns ``{"logits": (N, K), "boxes": (N, 4)}``; the graph has these two
  named outputs and :meth:`LocalizeView.model_output` rebuilds the dict from them, so
  ``task.decode`` (softmax, and the box from the task's encoding to xyxy input pixels, both outside
  the graph) runs on onnxruntime's outputs exactly as on the model's.
- **Drawing**: the predicted box in the task's red, captioned "class p%", on the image enlarged
  (nearest) to at least :data:`DRAW_SIDE` pixels so the caption is legible.
- **Report**: the test accuracy, mean IoU and hit rate of ``test_metrics.json`` (and its per-class
  accuracy if a run recorded one), and per true class over the test split: images, accuracy, mean
  IoU, hit rate.
- **App**: the top-5 classes (``id="result"`` names the top one), the box (``id="box"``) and the
  drawn image (``id="drawn"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import ops

from cnnkit.deploy.views import (
    ClassifyView,
    Table,
    TaskView,
    drawn_image_html,
    enlarge_factor,
    metric_rows,
    register_view,
)
from cnnkit.tasks.localize import HIT_IOU, PREDICTED_COLOR, paired_iou

#: drawn images are enlarged (nearest, by an integer factor) to at least this side, in pixels
DRAW_SIDE = 256
#: the graph's outputs: the model's dict keys, in this order
OUTPUTS = ("logits", "boxes")


@register_view
class LocalizeView(TaskView):
    task = "localize"
    output_names = OUTPUTS
    postprocess = (
        "none in the graph: logits (N, num_classes) and boxes (N, 4) in the task's box encoding "
        "(cnnkit.task_options: box_encoding, image_size); outside it cnnkit decodes them with the "
        "task: class probabilities = softmax(logits, 1), boxes to xyxy pixels of the input"
    )

    def graph_outputs(self, output: Any) -> tuple[torch.Tensor, ...]:
        return tuple(output[name] for name in OUTPUTS)

    def model_output(self, outputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        if len(outputs) != len(OUTPUTS):
            raise ValueError(
                f"localize: the graph has {len(outputs)} outputs; expected {len(OUTPUTS)}, "
                f"{', '.join(OUTPUTS)}"
            )
        return dict(zip(OUTPUTS, outputs, strict=True))

    def draw(
        self, images: torch.Tensor, decoded: list[dict[str, Any]], class_names: Sequence[str]
    ) -> torch.Tensor:
        """Each image (uint8 (N, C, H, W) at the model's input size) enlarged ×f to ≥ 256 px,
        its predicted box outlined in red and captioned "class p%" (``draw_annotations``:
        ``torchvision.utils.draw_bounding_boxes``, xyxy continuous pixel coordinates)."""
        from cnnkit.viz.annotations import draw_annotations

        factor = enlarge_factor(images, DRAW_SIDE)
        drawn = []
        for image, found in zip(images, decoded, strict=True):
            box = ops.clip_boxes_to_image(
                found["box"].detach().float().cpu().view(1, 4), image.shape[-2:]
            )
            label = int(found["label"])
            drawn.append(
                draw_annotations(
                    image, box, torch.tensor([label]), scale=factor, colors=[PREDICTED_COLOR],
                    captions=[f"{class_names[label]} {float(found['score']):.0%}"],
                )
            )  # fmt: skip
        return torch.stack(drawn)

    def tables(self, metrics: dict[str, Any], class_names: Sequence[str]) -> list[Table]:
        rows = metric_rows(metrics, percent=("test_accuracy", "test_hit_rate"))
        tables = [
            Table(
                f"test metrics (hit: IoU ≥ {HIT_IOU} and the right class)",
                ["metric", "value"],
                rows,
            )
        ]
        per_class = metrics.get("per_class_accuracy")
        if isinstance(per_class, dict):
            rows = [[str(name), f"{acc:.2%}"] for name, acc in per_class.items()]
            tables.append(Table("per-class accuracy (recall)", ["class", "accuracy"], rows))
        return tables

    def extra_tables(
        self, model: torch.nn.Module, task: Any, batches: Any, class_names: Sequence[str]
    ) -> list[Table]:
        """Per true class over the test split: its images, the accuracy, the mean IoU of the
        predicted and true boxes, and the hit rate."""
        k = len(class_names)
        images, correct, iou, hits = (torch.zeros(k, dtype=torch.float64) for _ in range(4))
        model.eval()
        with torch.no_grad():
            for x, y in batches:
                decoded = task.decode(model(x))
                labels = y["labels"].long().cpu()
                predicted = torch.tensor([d["label"] for d in decoded])
                boxes = torch.stack([d["box"].float().cpu() for d in decoded])
                overlap = paired_iou(boxes, y["boxes"].float().cpu()).double()
                right = (predicted == labels).double()
                images += torch.bincount(labels, minlength=k)
                correct += torch.bincount(labels, right, minlength=k)
                iou += torch.bincount(labels, overlap, minlength=k)
                hits += torch.bincount(labels, right * (overlap >= HIT_IOU), minlength=k)
        rows = [
            [name, str(int(n)), f"{c / n:.2%}", f"{i / n:.4f}", f"{h / n:.2%}"]
            if n
            else [name, "0", "-", "-", "-"]
            for name, n, c, i, h in zip(
                class_names, images.tolist(), correct.tolist(), iou.tolist(), hits.tolist(),
                strict=True,
            )
        ]  # fmt: skip
        header = ["class", "images", "accuracy", "mean IoU", "hit rate"]
        return [Table("per true class, on the test split", header, rows)]

    def result_html(
        self,
        decoded: dict[str, Any],
        class_names: Sequence[str],
        task: Any,
        image: torch.Tensor | None = None,
    ) -> str:
        x1, y1, x2, y2 = (float(v) for v in decoded["box"].tolist())
        parts = [
            ClassifyView().result_html(decoded["probs"], class_names, task),
            f'<p id="box">box <span class="xyxy">({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f})</span> '
            "xyxy pixels of the input</p>",
        ]
        if image is not None:
            drawn = self.draw(image.unsqueeze(0), [decoded], class_names)[0]
            label = class_names[int(decoded["label"])]
            parts.append(drawn_image_html(drawn, f"the predicted box of the {label}"))
        return "".join(parts)
