"""Boxes: the one place in cnnkit that knows box formats, IoU and non-max suppression.

Conventions (every other module converts through here):

- **xyxy** ``(x1, y1, x2, y2)``: corners, continuous pixel coordinates, (0, 0) the top-left corner of
  the top-left pixel, x to the right, y down; a box covering pixels 0..9 is ``(0, 0, 10, 10)``, area
  (x2 - x1)·(y2 - y1) with no "+1" (COCO's and torchvision's convention; VOC's devkit added 1).
  cnnkit's boxes are xyxy unless a name says otherwise.
- **xywh** ``(x1, y1, w, h)``: COCO's annotation format. **cxcywh** ``(cx, cy, w, h)``: centre and
  size (YOLO's). Conversions between the three are ``torchvision.ops.box_convert``.
- **normalized**: any of the above divided by the image width (x, w) and height (y, h), so in [0, 1]
  for boxes inside the image (YOLO label files, the notes' "normalized so that the coordinates range
  from 0 to 1").
- **the notes' localization encoding** (Géron, ch. 14, "Classification and Localization"):
  ``(cx, cy, sqrt(w), sqrt(h))`` of the normalized box, so a 10-pixel error on a large box costs less
  than on a small one. ``encode_localization`` / ``decode_localization`` are exact inverses;
  ``encoding="plain"`` keeps ``(cx, cy, w, h)`` for comparison.

IoU and NMS are torchvision's (``torchvision.ops.box_iou``, ``nms``, ``batched_nms``) with their
exact results; this module adds the notes' objectness threshold, per-class NMS by ``labels`` and
input validation whose errors say what was wrong.
"""

from __future__ import annotations

from typing import Literal

import torch
from torchvision import ops

BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
_FORMATS = ("xyxy", "xywh", "cxcywh")


def check_boxes(boxes: torch.Tensor, name: str = "boxes", fmt: BoxFormat = "xyxy") -> None:
    """Raise ``ValueError`` unless ``boxes`` is a finite (N, 4) floating tensor of valid boxes:
    x2 >= x1 and y2 >= y1 for xyxy, w, h >= 0 for xywh/cxcywh. ``name`` says where it came from."""
    if not isinstance(boxes, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor of shape (N, 4), found {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name}: expected shape (N, 4), found {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, found {boxes.dtype}")
    if not torch.isfinite(boxes).all():
        row = int((~torch.isfinite(boxes)).any(dim=1).nonzero()[0])
        raise ValueError(f"{name}: box {row} is {boxes[row].tolist()}; expected finite coordinates")
    if fmt == "xyxy":
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        expected = "x2 >= x1 and y2 >= y1 (xyxy)"
    else:
        bad = (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
        expected = f"w >= 0 and h >= 0 ({fmt})"
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ValueError(f"{name}: box {row} is {boxes[row].tolist()}; expected {expected}")


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4): (N, M), ``torchvision.ops.box_iou``.

    Continuous coordinates (no "+1"); the IoU of two empty boxes is NaN (0/0), as torchvision's.
    """
    check_boxes(a, "box_iou: a")
    check_boxes(b, "box_iou: b")
    return ops.box_iou(a, b)


def wh_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of box *shapes* (N, 2) and (M, 2) as (w, h), the boxes sharing one centre:
    min(w)·min(h) / (w·h + w'·h' - min(w)·min(h)). (N, M).

    The distance of YOLOv2's anchor K-Means (Redmon & Farhadi, "YOLO9000", CVPR 2017, §2) and the
    anchor assignment of the detector. Written by hand: torchvision has no centre-aligned IoU, and
    building xyxy boxes around a common centre to call ``box_iou`` gives the same numbers slower.
    """
    inter = torch.minimum(a[:, None, 0], b[None, :, 0]) * torch.minimum(
        a[:, None, 1], b[None, :, 1]
    )
    union = (a[:, 0] * a[:, 1])[:, None] + (b[:, 0] * b[:, 1])[None, :] - inter
    return inter / union


def nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float = 0.6,
    score_threshold: float | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Non-max suppression, the notes' three steps: drop the boxes whose score is below
    ``score_threshold`` (the objectness threshold), keep the best box, drop those that overlap it,
    repeat. Per class when ``labels`` is given (a box only suppresses boxes of its own label).

    Args:
        boxes: (N, 4) xyxy. scores: (N,). labels: (N,) integers or ``None``.
        iou_threshold: boxes overlapping a kept box with IoU **strictly greater** than this are
            dropped. The notes say "IoU >= 60%"; torchvision (whose ``nms``/``batched_nms`` do the
            work here, so the results are exactly theirs) drops at IoU > threshold, so a box at exactly
            0.6 survives. The two differ only on exact ties of the IoU, which real boxes rarely hit;
            note that the IoU is float32 compared with a float64 threshold, so an IoU that "is" 0.6
            (60/100) rounds to 0.6000000238 and is suppressed, while 0.5 is exact and is not.
        score_threshold: boxes with score < this are dropped first; ``None`` keeps all.

    Returns:
        int64 indices into ``boxes`` of the kept boxes, by descending score; among equal scores the
        lower index comes first and is the one kept (torchvision's stable sort).
    """
    check_boxes(boxes, "nms: boxes")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"nms: scores has shape {tuple(scores.shape)}; expected ({boxes.shape[0]},), "
            "one score per box"
        )
    if torch.isnan(scores).any():
        row = int(torch.isnan(scores).nonzero()[0])
        raise ValueError(f"nms: scores[{row}] is NaN; expected a number")
    if labels is not None and (labels.dim() != 1 or labels.shape[0] != boxes.shape[0]):
        raise ValueError(
            f"nms: labels has shape {tuple(labels.shape)}; expected ({boxes.shape[0]},), "
            "one label per box"
        )
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"nms: iou_threshold={iou_threshold}; expected a value in [0, 1]")
    index = torch.arange(boxes.shape[0], device=boxes.device)
    if score_threshold is not None:
        keep = scores >= score_threshold
        boxes, scores, index = boxes[keep], scores[keep], index[keep]
        labels = labels[keep] if labels is not None else None
    if labels is None:
        kept = ops.nms(boxes, scores, iou_threshold)
    else:
        kept = ops.batched_nms(boxes, scores, labels, iou_threshold)
    return index[kept]


def convert_boxes(boxes: torch.Tensor, in_fmt: BoxFormat, out_fmt: BoxFormat) -> torch.Tensor:
    """Convert (N, 4) boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"``
    (``torchvision.ops.box_convert``)."""
    for fmt in (in_fmt, out_fmt):
        if fmt not in _FORMATS:
            raise ValueError(f"convert_boxes: format {fmt!r}; expected one of {_FORMATS}")
    return ops.box_convert(boxes, in_fmt, out_fmt)


def _scale(image_size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    height, width = image_size
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size={image_size}; expected (height, width), both > 0")
    return like.new_tensor([width, height, width, height])


def normalize_boxes(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Pixel boxes (any of the three formats) → normalized: x and w divided by the image width,
    y and h by its height. ``image_size`` is (height, width), torch's order."""
    return boxes / _scale(image_size, boxes)


def denormalize_boxes(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Normalized boxes → pixels, the inverse of ``normalize_boxes``."""
    return boxes * _scale(image_size, boxes)


#: how the localization targets hold the box size: the notes' square roots, or the size itself
SIZE_ENCODINGS = ("sqrt", "plain")


def _check_size_encoding(encoding: str) -> None:
    if encoding not in SIZE_ENCODINGS:
        raise ValueError(f"encoding={encoding!r}; expected one of {', '.join(SIZE_ENCODINGS)}")


def encode_localization(
    boxes: torch.Tensor, image_size: tuple[int, int], encoding: str = "sqrt"
) -> torch.Tensor:
    """xyxy pixel boxes → the notes' regression targets ``(cx, cy, sqrt(w), sqrt(h))``, normalized
    to the image (Géron, ch. 14: "predict the square root of the height and width rather than the
    height and width directly"); ``encoding="plain"`` keeps ``(cx, cy, w, h)`` (the comparison)."""
    check_boxes(boxes, "encode_localization: boxes")
    _check_size_encoding(encoding)
    cxcywh = normalize_boxes(ops.box_convert(boxes, "xyxy", "cxcywh"), image_size)
    if encoding == "plain":
        return cxcywh
    return torch.cat([cxcywh[:, :2], cxcywh[:, 2:].sqrt()], dim=1)


def decode_localization(
    encoded: torch.Tensor, image_size: tuple[int, int], encoding: str = "sqrt"
) -> torch.Tensor:
    """The inverse of ``encode_localization``: ``(cx, cy, sqrt(w), sqrt(h))`` (or ``(cx, cy, w, h)``
    with ``encoding="plain"``) → xyxy pixels. A predicted size must decode to a valid box: a negative
    root decodes as the size of its square (the sign is lost by squaring), a negative plain size as
    zero (an empty box, IoU 0)."""
    _check_size_encoding(encoding)
    sizes = encoded[:, 2:].square() if encoding == "sqrt" else encoded[:, 2:].clamp(min=0)
    cxcywh = torch.cat([encoded[:, :2], sizes], dim=1)
    return ops.box_convert(denormalize_boxes(cxcywh, image_size), "cxcywh", "xyxy")
