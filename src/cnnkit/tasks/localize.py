"""Classification + localization: one object per image, its class and its bounding box (Géron,
*Hands-On Machine Learning*, ch. 14, "Classification and Localization").

Model-output contract (the registry's ``"localize"`` models, ``cnnkit.models.localizer``):
``{"logits": (N, K), "boxes": (N, 4)}``: class logits, and the box in this task's encoding, the
box normalized by the image size (x and w by the width, y and h by the height) as

- ``box_encoding="sqrt"`` (default, the notes'): ``(cx, cy, sqrt(w), sqrt(h))``: "a 10 pixel error
  for a large bounding box will not be penalized as much as a 10 pixel error for a small bounding box";
- ``box_encoding="plain"``: ``(cx, cy, w, h)``, for the comparison.

The conversion lives in one place, :func:`cnnkit.detection.boxes.encode_localization` /
``decode_localization``. Targets: ``{"labels": (N,) int64, "boxes": (N, 4) xyxy pixels}``, what
``load_data("scenes", task="localize")`` serves. Decoded: one dict per image, ``probs`` (K,),
``label``, ``score`` and ``box`` (4,) xyxy in pixels of the model's input.

Loss: ``class_weight`` × cross-entropy + ``box_weight`` × MSE of the encoded box, 0.8 / 0.2 by
default (the notes' ``loss_weights=[0.8, 0.2]``), plus ``giou_weight`` × the generalized IoU loss of
the decoded boxes (Rezatofighi et al., CVPR 2019; ``torchvision.ops.generalized_box_iou_loss``), 0
by default. Why the extra term: with the notes' weights the box MSE is about 1/400 of the
cross-entropy once the class is learned (0.2 × 0.005 vs 0.8 × 0.5 after three epochs on the
scenes), so the shared backbone learns almost only from the class, and the mean IoU flattened at
0.67 while the accuracy kept climbing (``docs/notes/issue-11.md``); the GIoU loss is on the scale of
the metric itself (1 − IoU, plus the enclosing-box term that still has a gradient for disjoint
boxes). Metrics: class accuracy, mean IoU of the predicted
and true box (``torchvision.ops.box_iou``), and the *hit rate*, the share of images whose box has
IoU ≥ 0.5 and whose class is right (PASCAL VOC's detection criterion for a single object); the
monitored metric is ``val_hit_rate``.

The task must know the image size to normalize: ``build_model`` takes it from the dataset's
``DataMeta`` (``input_size``) and ``options()`` records it, so ``cnnkit evaluate``/``predict`` rebuild
the same task from ``config.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import ops

from cnnkit.detection.boxes import SIZE_ENCODINGS, decode_localization, encode_localization
from cnnkit.tasks.base import SumMetric, Task, ratio
from cnnkit.tasks.registry import register_task

if TYPE_CHECKING:
    from cnnkit.data.datasets import DataMeta

#: the notes' ``loss_weights=[0.8, 0.2]``: cross-entropy, then the box MSE
CLASS_WEIGHT, BOX_WEIGHT = 0.8, 0.2
#: the IoU from which a box counts as found (PASCAL VOC; Everingham et al., IJCV 2010, §4.4)
HIT_IOU = 0.5
#: the localizer model family the task builds around a zoo backbone (``models/localizer.py``)
MODEL = "localizer"
#: options of the localizer itself; any other model option goes to its backbone
_LOCALIZER_OPTIONS = ("centre", "box_stage", "crop", "backbone_input")
#: colours of the report's and ``predict --out``'s boxes
TRUE_COLOR, PREDICTED_COLOR = (0, 200, 0), (230, 0, 0)


def _split(output: Any, where: str = "localize") -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(output, dict) and {"logits", "boxes"} <= set(output)):
        found = sorted(output) if isinstance(output, dict) else type(output).__name__
        raise TypeError(
            f"{where}: the model returned {found}; expected a dict with 'logits' (N, K) and "
            "'boxes' (N, 4) (a 'localize' model: --model BACKBONE builds models/localizer.py)"
        )
    logits, boxes = output["logits"].float(), output["boxes"].float()
    if logits.dim() != 2 or boxes.shape != (len(logits), 4):
        raise ValueError(
            f"{where}: the model's 'logits' have shape {tuple(logits.shape)} and 'boxes' "
            f"{tuple(boxes.shape)}; expected (N, K) and (N, 4)"
        )
    return logits, boxes


def _targets(target: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(target, dict) and {"labels", "boxes"} <= set(target)):
        found = sorted(target) if isinstance(target, dict) else type(target).__name__
        raise TypeError(
            f"localize: the targets are {found}; expected a dict with 'labels' (N,) and 'boxes' "
            "(N, 4) xyxy pixels, one object per image (--data scenes serves them)"
        )
    labels, boxes = target["labels"], target["boxes"]
    if labels.shape != (n,) or boxes.shape != (n, 4):
        raise ValueError(
            f"localize: target 'labels' {tuple(labels.shape)} and 'boxes' {tuple(boxes.shape)} "
            f"for {n} outputs; expected ({n},) and ({n}, 4): one object per image"
        )
    return labels.long(), boxes.float()


def paired_iou(boxes: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """IoU of each box with the box of the same row, xyxy (N, 4) each → (N,): the diagonal of
    ``torchvision.ops.box_iou``. Two empty boxes have IoU 0 here (torchvision: 0/0 = NaN)."""
    return ops.box_iou(boxes, other).diagonal().nan_to_num(0.0)


class LocalizationMetrics(SumMetric):
    """Accuracy, mean IoU and hit rate (IoU ≥ :data:`HIT_IOU` and the right class); with
    ``task`` also the loss (``loss``, and its parts ``class_loss`` and ``box_loss``)."""

    names = ("images", "correct", "iou", "hits", "loss", "class_loss", "box_loss")

    def __init__(self, task: Localize, with_loss: bool = True) -> None:
        super().__init__()
        self.task, self.with_loss = task, with_loss

    def update(self, output: Any, target: Any) -> None:
        logits, encoded = _split(output)
        logits, encoded = logits.detach(), encoded.detach()
        labels, true_boxes = _targets(target, len(logits))
        correct = logits.argmax(1) == labels
        iou = paired_iou(self.task.decode_boxes(encoded), true_boxes)
        n = float(len(labels))
        zero = logits.new_zeros(())
        total, parts = self.task.loss(output, target) if self.with_loss else (zero, {})
        self.add(
            images=n,
            correct=correct.sum(),
            iou=iou.sum(),
            hits=(correct & (iou >= HIT_IOU)).sum(),
            loss=total.detach() * n,
            class_loss=parts.get("classification", zero).detach() * n,
            box_loss=parts.get("box", zero).detach() * n,
        )

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        n = totals["images"]
        values = {
            "accuracy": ratio(totals["correct"], n),
            "mean_iou": ratio(totals["iou"], n),
            "hit_rate": ratio(totals["hits"], n),
        }
        if self.with_loss:
            for key in ("loss", "class_loss", "box_loss"):
                values[key] = ratio(totals[key], n)
        return values


@register_task
class Localize(Task):
    """Classification + localization: cross-entropy and box MSE weighted ``class_weight`` /
    ``box_weight`` (0.8 / 0.2), the box encoded as ``box_encoding`` (``sqrt`` or ``plain``) and
    normalized by ``image_size`` (H, W), which ``build_model`` takes from the data when not given."""

    name = "localize"
    monitor = "val_hit_rate"
    monitor_mode = "max"
    model_task = "classify"  # zoo classifiers are the backbones
    progress_keys: ClassVar[dict[str, str]] = {"accuracy": "acc", "mean_iou": "iou"}

    def __init__(
        self,
        box_encoding: str = "sqrt",
        class_weight: float = CLASS_WEIGHT,
        box_weight: float = BOX_WEIGHT,
        image_size: Sequence[int] | None = None,
        giou_weight: float = 0.0,
    ) -> None:
        if box_encoding not in SIZE_ENCODINGS:
            raise ValueError(
                f"box_encoding: expected one of {', '.join(SIZE_ENCODINGS)}, got {box_encoding!r}"
            )
        if min(class_weight, box_weight, giou_weight) < 0 or class_weight + box_weight == 0:
            raise ValueError(
                f"class_weight={class_weight}, box_weight={box_weight}, giou_weight={giou_weight}: "
                "expected weights >= 0, class_weight and box_weight not both 0"
            )
        self.box_encoding = box_encoding
        self.class_weight, self.box_weight = float(class_weight), float(box_weight)
        self.giou_weight = float(giou_weight)
        self.image_size: tuple[int, int] | None = None
        if image_size is not None:
            if len(image_size) != 2 or min(image_size) < 1:
                raise ValueError(f"image_size: expected (height, width) > 0, got {image_size}")
            self.image_size = (int(image_size[0]), int(image_size[1]))

    def options(self) -> dict[str, Any]:
        return {
            "box_encoding": self.box_encoding,
            "class_weight": self.class_weight,
            "box_weight": self.box_weight,
            "giou_weight": self.giou_weight,
            "image_size": None if self.image_size is None else list(self.image_size),
        }

    # ---- model and data
    def model_spec(self, name: str, meta: DataMeta, options: dict[str, Any]) -> dict[str, Any]:
        """What ``config.json`` records as ``model``, so that ``create_model(**spec)`` (``cnnkit
        evaluate``/``predict``) rebuilds what :meth:`build_model` builds: the ``localizer`` family
        with ``backbone=name``; the localizer's own options (``centre``) beside it, the others
        passed to the backbone."""
        own = {k: v for k, v in options.items() if k in _LOCALIZER_OPTIONS}
        rest = {k: v for k, v in options.items() if k not in _LOCALIZER_OPTIONS}
        model_options: dict[str, Any] = {"backbone": name, **own}
        if own.get("crop"):  # the crop decodes the box: the model needs this task's encoding
            model_options["box_encoding"] = self.box_encoding
        if rest:
            model_options["backbone_options"] = rest
        return {
            "name": MODEL,
            "num_classes": len(meta.class_names),
            "in_channels": meta.input_size[0],
            "options": model_options,
        }

    def build_model(self, name: str, meta: DataMeta, **options: Any) -> nn.Module:
        """``create_model("localizer", backbone=name, ...)`` for the dataset ``meta``, whose input
        size becomes the task's ``image_size``."""
        from cnnkit.models import create_model

        size = (meta.input_size[1], meta.input_size[2])
        if self.image_size is not None and self.image_size != size:
            raise ValueError(
                f"localize: task option image_size={list(self.image_size)} but the data "
                f"({meta.name}) is {size[0]}x{size[1]}; expected the same size"
            )
        self.image_size = size
        spec = self.model_spec(name, meta, options)
        return create_model(
            spec["name"], spec["num_classes"], spec["in_channels"], **spec["options"]
        )

    def _size(self) -> tuple[int, int]:
        if self.image_size is None:
            raise ValueError(
                "localize: the image size is unknown; build the model with build_model(name, meta) "
                "or pass image_size=(height, width)"
            )
        return self.image_size

    def encode_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """xyxy pixel boxes (N, 4) → the regression targets in this task's encoding."""
        return encode_localization(boxes, self._size(), self.box_encoding)

    def decode_boxes(self, encoded: torch.Tensor) -> torch.Tensor:
        """The model's box numbers (N, 4) → xyxy boxes in pixels of the model's input."""
        return decode_localization(encoded, self._size(), self.box_encoding)

    # ---- training
    def loss(self, output: Any, target: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, boxes = _split(output)
        labels, true_boxes = _targets(target, len(logits))
        classification = F.cross_entropy(logits, labels)
        box = F.mse_loss(boxes, self.encode_boxes(true_boxes))
        total = self.class_weight * classification + self.box_weight * box
        parts = {"classification": classification, "box": box}
        if self.giou_weight > 0:
            giou = ops.generalized_box_iou_loss(
                self.decode_boxes(boxes.float()), true_boxes.float(), reduction="mean"
            )
            total = total + self.giou_weight * giou
            parts["giou"] = giou
        return total, parts

    def train_metrics(self) -> LocalizationMetrics:
        return LocalizationMetrics(self, with_loss=False)

    def eval_metrics(self) -> LocalizationMetrics:
        return LocalizationMetrics(self)

    # ---- inference
    def decode(self, output: Any) -> list[dict[str, Any]]:
        """Per image: ``probs`` (K,), ``label`` and ``score`` (the most probable class and its
        probability), ``box`` (4,) xyxy in pixels of the model's input."""
        logits, encoded = _split(output)
        probs = logits.softmax(1)
        scores, labels = probs.max(1)
        boxes = self.decode_boxes(encoded)
        return [
            {"probs": p, "label": int(k), "score": float(s), "box": b}
            for p, k, s, b in zip(probs, labels, scores, boxes, strict=True)
        ]

    def format_prediction(
        self, decoded: dict[str, Any], class_names: Sequence[str], top: int = 3
    ) -> list[str]:
        top_k = decoded["probs"].topk(min(top, len(class_names)))
        x1, y1, x2, y2 = decoded["box"].tolist()
        height, width = self._size()
        lines = [
            f"box  ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f})  xyxy px of the {width}x{height} input"
        ]
        lines += [
            f"{class_names[i]:<14s} {p:7.2%}"
            for p, i in zip(top_k.values.tolist(), top_k.indices.tolist(), strict=True)
        ]
        return lines

    draws_predictions = True

    def draw_prediction(
        self, image: torch.Tensor, decoded: dict[str, Any], class_names: Sequence[str]
    ) -> torch.Tensor:
        """``image`` (uint8 (C, H, W), any size) with the predicted box in red, captioned with the
        class and its probability: uint8 (3, H', W'), enlarged ×2 when the image is under 256 px.
        The box is scaled from the model's input to the image (exact for the ``stretch`` policy,
        which scenes use)."""
        from cnnkit.viz.annotations import draw_annotations

        height, width = self._size()
        scale = image.new_tensor(
            [image.shape[2] / width, image.shape[1] / height] * 2, dtype=torch.float32
        )
        box = ops.clip_boxes_to_image(
            decoded["box"].detach().float().cpu() * scale, image.shape[1:]
        )
        label = decoded["label"]
        return draw_annotations(
            image,
            box.view(1, 4),
            torch.tensor([label]),
            scale=2 if max(image.shape[1:]) < 256 else 1,
            colors=[PREDICTED_COLOR],
            captions=[f"{class_names[label]} {decoded['score']:.2f}"],
        )

    # ---- the end of a run
    def report(
        self, trainer: Any, test: Any, meta: DataMeta, run_dir: Path | None
    ) -> dict[str, Any]:
        """Test loss, accuracy, mean IoU and hit rate; with ``run_dir`` a grid of the first 16 test
        images with the true box (green, true class) and the predicted one (red, class and
        probability), ``rundir.LOCALIZATION_PLOT``."""
        if self.image_size is None:
            self.image_size = (meta.input_size[1], meta.input_size[2])
        metrics: dict[str, Any] = {f"test_{k}": v for k, v in trainer.evaluate(test).items()}
        if run_dir is not None:
            from cnnkit.train import rundir

            x, y = next(iter(test))
            count = min(16, len(x))
            decoded = trainer.predict(x[:count])
            target = {k: v[:count].cpu() for k, v in y.items()}
            self.save_grid(run_dir / rundir.LOCALIZATION_PLOT, meta, x[:count], target, decoded)
        return metrics

    def save_grid(
        self,
        path: Path,
        meta: DataMeta,
        x: torch.Tensor,
        target: dict[str, torch.Tensor],
        decoded: list[dict[str, Any]],
        columns: int = 4,
    ) -> Path:
        """Normalized images ``x`` with their true (green) and predicted (red) boxes, one PNG."""
        from torchvision.utils import make_grid

        from cnnkit.viz.annotations import draw_annotations, save_png

        names = meta.class_names
        images = torch.as_tensor(meta.to_display(x) * 255).round().to(torch.uint8)
        # grey (N, H, W) → (N, 1, H, W); colour (N, H, W, C) → (N, C, H, W)
        images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
        drawn = []
        for image, label, box, pred in zip(
            images, target["labels"].tolist(), target["boxes"], decoded, strict=True
        ):
            predicted = ops.clip_boxes_to_image(pred["box"].detach().float().cpu(), image.shape[1:])
            boxes = torch.stack([box.float(), predicted])
            drawn.append(
                draw_annotations(
                    image,
                    boxes,
                    torch.tensor([label, pred["label"]]),
                    colors=[TRUE_COLOR, PREDICTED_COLOR],
                    captions=[names[label], f"{names[pred['label']]} {pred['score']:.2f}"],
                )
            )
        return save_png(make_grid(drawn, nrow=columns, padding=4, pad_value=255), path)

    def print_report(self, metrics: dict[str, Any], meta: DataMeta) -> None:
        print(
            f"  loss       {metrics['test_loss']:.4f} (classification "
            f"{metrics['test_class_loss']:.4f}, box {metrics['test_box_loss']:.5f})\n"
            f"  accuracy   {metrics['test_accuracy']:.2%}\n"
            f"  mean IoU   {metrics['test_mean_iou']:.4f}\n"
            f"  hit rate   {metrics['test_hit_rate']:.2%} (IoU >= {HIT_IOU} and the right class)"
        )

    def history_metric(self) -> str:
        return "mean_iou"
