"""What the deployment tools need to know about each task, in one table (``VIEWS``).

The :class:`cnnkit.tasks.Task` interface says how a task trains, decodes and prints; a
:class:`TaskView` adds how its predictions are *shown*: the names of the ONNX graph's outputs, how
a decoded prediction is drawn on its image (TensorBoard, the HTML report), the report's tables, and
the browser app's result panel. A task without a view of its own gets :class:`TaskView`, which
shows the lines of ``Task.format_prediction`` and the scalar test metrics, so every task is served.

A new task adds its view with ``@register_view``. Classification's view is here; localization's,
detection's, segmentation's and super-resolution's are one module each (``views_localize.py``,
``views_detect.py``, ``views_segment.py``, ``views_superres.py``), imported at the end of this one so that ``get_view`` knows every task.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch


@dataclass
class Table:
    """One table of the HTML report: a title, the column names and rows of already formatted cells."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in self.rows
        )
        return (
            f"<h3>{html.escape(self.title)}</h3>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )


class TaskView:
    """The default view: any task's output, shown through ``Task.format_prediction``."""

    task: str = ""
    #: the ONNX graph's output names (a model returning a tuple has one name per element)
    output_names: tuple[str, ...] = ("output",)
    #: what the graph computes, recorded in the ONNX metadata (``cnnkit.postprocess``)
    postprocess: str = "none in the graph: the raw model output; cnnkit decodes it with the task"
    #: the ONNX graph takes any height and width (a fully convolutional model whose output size
    #: follows the input's: super-resolution); else the data's input size, fixed
    dynamic_size: bool = False
    #: the channels an upload is decoded to for the app (None: the run's ``meta.channels``)
    upload_channels: int | None = None

    # ---- ONNX: the graph's outputs are tensors; the task decodes what the model returns
    def graph_outputs(self, output: Any) -> tuple[torch.Tensor, ...]:
        """The model's output as the graph's outputs, in ``output_names`` order (default: a tensor,
        or the elements of a tuple)."""
        return tuple(output) if isinstance(output, (tuple, list)) else (output,)

    def model_output(self, outputs: Sequence[torch.Tensor]) -> Any:
        """The graph's outputs (onnxruntime's, as tensors) back in the form the model returns, so
        ``task.decode`` takes them as it takes the PyTorch model's (the inverse of ``graph_outputs``)."""
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def export_metadata(self, model: torch.nn.Module) -> dict[str, str]:
        """More ``cnnkit.*`` metadata the task's decoding needs from the model (default: none)."""
        return {}

    def prepare_task(self, task: Any, metadata: dict[str, str]) -> None:
        """Give a task rebuilt from an ONNX file what ``export_metadata`` recorded (default: nothing)."""

    def draw(self, images: torch.Tensor, decoded: Any, class_names: Sequence[str]) -> torch.Tensor:
        """uint8 RGB images (N, 3, H, W) with their predictions drawn (default: unchanged)."""
        return images

    def draw_samples(
        self, images: torch.Tensor, decoded: Any, targets: Any, class_names: Sequence[str]
    ) -> torch.Tensor:
        """The report's sample predictions, with the test split's ``targets`` at hand for a view
        that shows them beside the prediction (default: ``draw``, which needs none)."""
        return self.draw(images, decoded, class_names)

    def app_input(self, meta: Any, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An uploaded uint8 image (C, H, W) → (the model's input (C', H', W'), the uint8 RGB
        image shown beside the result and given to ``result_html``). Default: the run's
        validation preprocessing (``meta.preprocess``) and the input as the model sees it."""
        x = meta.preprocess(image)
        return x, to_uint8_rgb(meta.to_display(x.unsqueeze(0)))[0]

    def tables(self, metrics: dict[str, Any], class_names: Sequence[str]) -> list[Table]:
        """The report's tables from ``test_metrics.json`` (default: its numbers)."""
        rows = [[k, f"{v:.4f}"] for k, v in metrics.items() if isinstance(v, (int, float))]
        return [Table("test metrics", ["metric", "value"], rows)]

    def extra_tables(
        self, model: torch.nn.Module, task: Any, batches: Any, class_names: Sequence[str]
    ) -> list[Table]:
        """Tables that need the model over the test split (default: none)."""
        return []

    def result_html(
        self,
        decoded: Any,
        class_names: Sequence[str],
        task: Any,
        image: torch.Tensor | None = None,
    ) -> str:
        """The browser app's result panel for one image's decoded prediction; ``image`` is the input
        as the model saw it (uint8 (3, H, W)), for a view that draws on it."""
        lines = task.format_prediction(decoded, class_names, 5)
        return f'<pre id="result">{html.escape(chr(10).join(lines))}</pre>'


class GraphOutputs(torch.nn.Module):
    """The model with its output as a graph's: a tuple of tensors in the view's ``output_names``
    order (a localizer's dict becomes ``(logits, boxes)``), for the ONNX export and TensorBoard's
    model graph, whose tracers take tensors and tuples of them."""

    def __init__(self, model: torch.nn.Module, view: TaskView) -> None:
        super().__init__()
        self.model, self.view = model, view

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.view.graph_outputs(self.model(x))


V = TypeVar("V", bound=type[TaskView])
VIEWS: dict[str, type[TaskView]] = {}


def register_view(cls: V) -> V:
    """Class decorator: the view of the task ``cls.task``."""
    VIEWS[cls.task] = cls
    return cls


def get_view(task: str) -> TaskView:
    """The view of ``task`` (the default :class:`TaskView` when the task registered none)."""
    return VIEWS.get(task, TaskView)()


def _percent(value: float) -> str:
    return f"{value:.2%}"


@register_view
class ClassifyView(TaskView):
    """Classification: logits out of the graph (softmax outside, as ``Classify.decode``), the top
    class written on each image, per-class accuracy and the confusion matrix, top-5 bars."""

    task = "classify"
    output_names = ("logits",)
    postprocess = "none in the graph: logits (N, num_classes); probabilities = softmax(logits, 1)"

    def draw(
        self, images: torch.Tensor, decoded: torch.Tensor, class_names: Sequence[str]
    ) -> torch.Tensor:
        """The top class and its probability as a box label over the whole image, black on a
        yellow band (``torchvision.utils.draw_bounding_boxes``, its built-in font)."""
        from torchvision.utils import draw_bounding_boxes

        images = _at_least(images, 96)
        height, width = images.shape[-2:]
        frame = torch.tensor([[0, 0, width - 1, height - 1]], dtype=torch.float)
        out = []
        for image, probs in zip(images, decoded, strict=True):
            p, i = probs.max(0)
            label = f"{class_names[int(i)]} {float(p):.0%}"
            out.append(
                draw_bounding_boxes(
                    image, frame, [label], colors="yellow", label_colors="black", fill_labels=True
                )
            )
        return torch.stack(out)

    def tables(self, metrics: dict[str, Any], class_names: Sequence[str]) -> list[Table]:
        scalars = [
            [k, _percent(v) if "accuracy" in k or k.startswith("test_top") else f"{v:.4f}"]
            for k, v in metrics.items()
            if isinstance(v, (int, float))
        ]
        tables = [Table("test metrics", ["metric", "value"], scalars)]
        per_class = metrics.get("per_class_accuracy")
        if isinstance(per_class, dict):
            rows = [[name, _percent(acc)] for name, acc in per_class.items()]
            tables.append(Table("per-class accuracy (recall)", ["class", "accuracy"], rows))
        return tables

    def extra_tables(
        self, model: torch.nn.Module, task: Any, batches: Any, class_names: Sequence[str]
    ) -> list[Table]:
        """The confusion matrix on the test split (rows: true classes, columns: predictions)."""
        metric = task.eval_metrics(num_classes=len(class_names))
        metric.reset()
        model.eval()
        with torch.no_grad():
            for x, y in batches:
                metric.update(model(x), y)
        matrix = metric.matrix()
        rows = [
            [name, *map(str, row)] for name, row in zip(class_names, matrix.tolist(), strict=True)
        ]
        return [
            Table(
                "confusion matrix (rows: true class, columns: predicted)", ["", *class_names], rows
            )
        ]

    def result_html(
        self,
        decoded: torch.Tensor,
        class_names: Sequence[str],
        task: Any,
        image: torch.Tensor | None = None,
    ) -> str:
        top = decoded.topk(min(5, len(class_names)))
        bars = "".join(
            f'<div class="bar"><span class="name">{html.escape(class_names[i])}</span>'
            f'<span class="track"><span class="fill" style="width:{p * 100:.1f}%"></span></span>'
            f'<span class="p">{p:.2%}</span></div>'
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        )
        best = class_names[int(top.indices[0])]
        return (
            f'<p id="result">predicted: <b class="top1">{html.escape(best)}</b></p>'
            f'<div class="bars">{bars}</div>'
        )


def _at_least(images: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 (N, C, H, W) enlarged by an integer factor (nearest) so the shorter side is ≥ ``side``,
    grey turned RGB: small images (28 × 28) stay legible with a label drawn on them."""
    factor = enlarge_factor(images, side)
    if factor > 1:
        images = images.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images.contiguous()


def enlarge_factor(images: torch.Tensor, side: int) -> int:
    """The integer factor that brings the shorter side of ``images`` (..., H, W) to ≥ ``side``."""
    return max(1, -(-side // min(images.shape[-2:])))


def drawn_image_html(image: torch.Tensor, alt: str) -> str:
    """A drawn prediction (uint8 (3, H, W)) as an ``<img id="drawn">`` with a PNG data URL."""
    from cnnkit.deploy.features import data_uri, png_bytes

    source = data_uri(png_bytes(image))
    return f'<img id="drawn" class="drawn" alt="{html.escape(alt)}" src="{source}">'


def metric_rows(metrics: dict[str, Any], percent: Sequence[str] = ()) -> list[list[str]]:
    """The numbers of ``test_metrics.json`` as table rows under their recorded keys: the keys in
    ``percent`` as percentages, the others to four decimals (NaN, an undefined metric, as ``-``)."""
    rows = []
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            shown = (
                "-" if math.isnan(value) else _percent(value) if key in percent else f"{value:.4f}"
            )
            rows.append([key, shown])
    return rows


def to_uint8_rgb(display: Any) -> torch.Tensor:
    """``DataMeta.to_display``'s [0, 1] images ((N, H, W) or (N, H, W, C)) → uint8 (N, 3, H, W)."""
    x = torch.as_tensor(display)
    x = x.unsqueeze(-1) if x.dim() == 3 else x
    x = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 3, 1, 2)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x.contiguous()


# The other tasks' views, one module each. Imported last: they import this module's names.
from cnnkit.deploy import (  # noqa: E402, F401
    views_detect,
    views_localize,
    views_segment,
    views_superres,
)
