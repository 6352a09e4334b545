"""Semantic segmentation's view (``cnnkit.tasks.segment``).

- **ONNX**: logits (N, K, H, W) out of the graph; the label map, their argmax over the classes, is
  taken outside it by ``task.decode``, as on the PyTorch path.
- **Drawing**: the label map as a colour overlay (``viz.segmentation.overlay``:
  ``torchvision.utils.draw_segmentation_masks``, opacity :data:`ALPHA`) in the palette of
  ``cnnkit segment`` and the run's plots (``viz.segmentation.class_colors``); background pixels
  keep the image's own. Image and label map are enlarged (nearest) to at least :data:`DRAW_SIDE`
  pixels, as the box views draw.
- **Report**: the test pixel accuracy, mean IoU and loss, and the IoU of each class.
- **App**: the share of the pixels of each class found, largest first (``id="result"``, one
  ``<tr class="share">`` per class with its colour), and the overlay (``id="drawn"``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import torch

from cnnkit.deploy.views import (
    Table,
    TaskView,
    drawn_image_html,
    enlarge_factor,
    metric_rows,
    register_view,
)

#: the overlay's opacity (``cnnkit segment --alpha``'s default)
ALPHA = 0.5
#: drawn images are enlarged (nearest, by an integer factor) to at least this side, in pixels
DRAW_SIDE = 256


@register_view
class SegmentView(TaskView):
    task = "segment"
    output_names = ("logits",)
    postprocess = (
        "none in the graph: logits (N, num_classes, H, W); label map = argmax over dim 1, taken "
        "outside the graph"
    )

    def draw(
        self, images: torch.Tensor, decoded: torch.Tensor, class_names: Sequence[str]
    ) -> torch.Tensor:
        """Each image (uint8 (N, C, H, W)) with its label map (N, H, W) overlaid in the classes'
        colours, both enlarged ×f (nearest) to ≥ 256 px."""
        from cnnkit.viz.segmentation import overlay

        factor = enlarge_factor(images, DRAW_SIDE)
        images = images.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
        decoded = decoded.cpu().repeat_interleave(factor, -2).repeat_interleave(factor, -1)
        return torch.stack(
            [
                overlay(image, labels, class_names, alpha=ALPHA)
                for image, labels in zip(images, decoded, strict=True)
            ]
        )

    def tables(self, metrics: dict[str, Any], class_names: Sequence[str]) -> list[Table]:
        tables = [
            Table(
                "test metrics", ["metric", "value"], metric_rows(metrics, ("test_pixel_accuracy",))
            )
        ]
        per_class = metrics.get("per_class_iou")
        if isinstance(per_class, dict):
            rows = [
                [str(name), "absent" if iou is None else f"{iou:.4f}"]
                for name, iou in per_class.items()
            ]
            tables.append(
                Table(
                    "IoU per class (absent: in neither the test labels nor the predictions)",
                    ["class", "IoU"],
                    rows,
                )
            )
        return tables

    def result_html(
        self,
        decoded: torch.Tensor,
        class_names: Sequence[str],
        task: Any,
        image: torch.Tensor | None = None,
    ) -> str:
        from cnnkit.viz.segmentation import class_colors, drawn_classes

        counts = torch.bincount(decoded.reshape(-1).cpu(), minlength=len(class_names))
        colors = class_colors(len(class_names))
        coloured = set(drawn_classes(class_names))
        rows = []
        for k in counts.argsort(descending=True, stable=True).tolist():
            if not counts[k]:
                continue
            name = html.escape(class_names[k])
            swatch = (
                '<span class="swatch" style="background:#{:02x}{:02x}{:02x}"></span>'.format(
                    *colors[k]
                )
                if k in coloured
                else '<span class="swatch"></span>'
            )
            share = float(counts[k]) / decoded.numel()
            rows.append(
                f'<tr class="share" data-class="{name}" data-share="{share:.4f}">'
                f"<td>{swatch}{name}</td><td>{share:.2%}</td></tr>"
            )
        parts = [
            '<table id="result"><thead><tr><th>class</th><th>pixels</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
        ]
        if image is not None:
            drawn = self.draw(image.unsqueeze(0), decoded.unsqueeze(0), class_names)[0]
            parts.append(drawn_image_html(drawn, "the predicted classes over the image"))
        return "".join(parts)
