"""What a YOLO grid means: target assignment, box encoding and decoding, the loss, postprocessing
(Redmon & Farhadi, "YOLO9000", CVPR 2017, §2 "Direct location prediction" and "Dimension Clusters";
the notes, ch. 14). The modules (``YOLOHead``, ``YOLODetector``, the registered ``yolo`` builder)
live in ``cnnkit.models.yolo`` and are re-exported here.

Conventions:

- Raw outputs are (N, B, S_h, S_w, 5 + K): ``t_x, t_y, t_w, t_h``, objectness logit, K class logits
  (``cnnkit.models.yolo``). Cell (row, col) covers input pixels [col·s, (col+1)·s) × [row·s,
  (row+1)·s) with s the stride; boxes are xyxy input pixels (``cnnkit.detection.boxes``); anchors are
  (w, h) input pixels.
- **Encoding** of a box with centre (cx, cy) and size (w, h) in cell (row, col) with anchor (a_w, a_h):
  ``(cx/s - col, cy/s - row, log(w/a_w), log(h/a_h))``: the centre's offset inside its cell, in
  [0, 1), which the network predicts as sigmoid(t_x), sigmoid(t_y) (YOLOv2's b_x = σ(t_x) + c_x), and
  the log-scale factors of the anchor (b_w = p_w·e^{t_w}). ``decode_boxes`` is its exact inverse.
- **Assignment**: each object goes to the cell containing its centre and, within it, to the anchor
  whose shape overlaps it most (IoU of the sizes with centres aligned, ``boxes.wh_iou``). Two objects
  wanting the same cell and anchor: the first one (in image order) keeps it, the other is not
  assigned (deterministic, unlike a scatter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torchvision import ops

from cnnkit.detection.boxes import check_boxes, nms, wh_iou
from cnnkit.models.yolo import DEFAULT_ANCHORS, YOLODetector, YOLOHead

__all__ = [
    "DEFAULT_ANCHORS",
    "Assignment",
    "YOLODetector",
    "YOLOHead",
    "assign_targets",
    "decode_boxes",
    "decode_outputs",
    "encode_boxes",
    "postprocess",
    "yolo_loss",
]

# exp() of a raw t_w above this overflows nothing but makes boxes of e^10 ≈ 22,000 anchors; raw
# outputs are clamped here when decoded for the loss and for inference (never in decode_boxes).
_MAX_LOG_SCALE = 10.0


@dataclass(frozen=True)
class Assignment:
    """The assigned objects, one entry each: ``image``, ``anchor``, ``row``, ``col`` (K,) int64
    index the output grid; ``boxes`` (K, 4) xyxy pixels and ``labels`` (K,) are the objects'."""

    image: torch.Tensor
    anchor: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor


def assign_targets(
    targets: Sequence[Mapping[str, torch.Tensor]],
    anchors: torch.Tensor,
    stride: int,
    grid_size: tuple[int, int],
) -> Assignment:
    """Assign every object of ``targets`` (one dict per image: ``boxes`` (M, 4) xyxy pixels,
    ``labels`` (M,)) to its cell and best anchor; see the module docstring. ``grid_size`` is
    (S_h, S_w). Centres on or beyond the image's last pixel go to the last cell."""
    device = anchors.device
    images, boxes, labels = [], [], []
    for i, target in enumerate(targets):
        check_boxes(target["boxes"], f"assign_targets: targets[{i}]['boxes']")
        b = target["boxes"].to(device=device, dtype=torch.float32)
        if ((b[:, 2] - b[:, 0]) <= 0).any() or ((b[:, 3] - b[:, 1]) <= 0).any():
            bad = int((((b[:, 2] - b[:, 0]) <= 0) | ((b[:, 3] - b[:, 1]) <= 0)).nonzero()[0])
            raise ValueError(
                f"assign_targets: targets[{i}]['boxes'][{bad}] is {b[bad].tolist()}; expected a "
                "width and height > 0 (its size factors are logarithms)"
            )
        images.append(torch.full((len(b),), i, dtype=torch.long, device=device))
        boxes.append(b)
        labels.append(target["labels"].to(device=device, dtype=torch.long))
    image = torch.cat(images) if images else torch.zeros(0, dtype=torch.long, device=device)
    box = torch.cat(boxes) if boxes else torch.zeros(0, 4, device=device)
    label = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device)
    centre = (box[:, :2] + box[:, 2:]) / 2
    size = box[:, 2:] - box[:, :2]
    grid_h, grid_w = grid_size
    col = (centre[:, 0] / stride).floor().long().clamp(0, grid_w - 1)
    row = (centre[:, 1] / stride).floor().long().clamp(0, grid_h - 1)
    anchor = (
        wh_iou(size, anchors.float()).argmax(dim=1)
        if len(box)
        else torch.zeros(0, dtype=torch.long, device=device)
    )
    # the first object of each (image, anchor, row, col) slot keeps it
    slot = ((image * len(anchors) + anchor) * grid_h + row) * grid_w + col
    order = torch.arange(len(slot), device=device)
    first = torch.full((int(slot.max()) + 1 if len(slot) else 0,), len(slot), device=device)
    first = first.scatter_reduce(0, slot, order, reduce="amin")
    keep = first[slot] == order
    return Assignment(image[keep], anchor[keep], row[keep], col[keep], box[keep], label[keep])


def encode_boxes(
    boxes: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
    anchor_sizes: torch.Tensor,
    stride: int,
) -> torch.Tensor:
    """xyxy pixel boxes (K, 4) in cells (row, col) with anchors (K, 2) → (K, 4) targets
    ``(cx/s - col, cy/s - row, log(w/a_w), log(h/a_h))``: offsets in the cell (what sigmoid(t_x),
    sigmoid(t_y) predict) and the log-scale factors (what t_w, t_h predict)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    cell = torch.stack([col, row], dim=1).to(boxes.dtype)
    return torch.cat([centre / stride - cell, torch.log(size / anchor_sizes)], dim=1)


def decode_boxes(
    encoded: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
    anchor_sizes: torch.Tensor,
    stride: int,
) -> torch.Tensor:
    """The exact inverse of ``encode_boxes``: (..., 4) (offset x, offset y, log w factor, log h
    factor) → (..., 4) xyxy pixels: centre (col + offset)·s, size anchor·exp(factor). ``row``,
    ``col`` and ``anchor_sizes`` broadcast against ``encoded[..., 0]`` (``anchor_sizes`` with a
    trailing 2)."""
    cell = torch.stack(torch.broadcast_tensors(col, row), dim=-1).to(encoded.dtype)
    centre = (cell + encoded[..., :2]) * stride
    size = anchor_sizes * torch.exp(encoded[..., 2:4])
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def _grid(outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, grid_h, grid_w, _ = outputs.shape
    row = torch.arange(grid_h, device=outputs.device)[:, None]  # S_h x 1
    col = torch.arange(grid_w, device=outputs.device)[None, :]  # 1 x S_w
    return row, col


def decode_outputs(
    outputs: torch.Tensor, anchors: torch.Tensor, stride: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw outputs (N, B, S_h, S_w, 5 + K) → ``(boxes, objectness, class_probabilities)`` in
    float32: (N, B, S_h, S_w, 4) xyxy pixels (sigmoid on t_x, t_y; t_w, t_h clamped to ±10 before exp),
    (N, B, S_h, S_w) sigmoid objectness, (N, B, S_h, S_w, K) softmax class probabilities."""
    outputs = outputs.float()
    row, col = _grid(outputs)
    encoded = torch.cat(
        [outputs[..., :2].sigmoid(), outputs[..., 2:4].clamp(-_MAX_LOG_SCALE, _MAX_LOG_SCALE)], -1
    )
    anchor_sizes = anchors.to(outputs.dtype)[:, None, None, :]  # B x 1 x 1 x 2
    boxes = decode_boxes(encoded, row, col, anchor_sizes, stride)
    return boxes, outputs[..., 4].sigmoid(), outputs[..., 5:].softmax(dim=-1)


def yolo_loss(
    outputs: torch.Tensor,
    targets: Sequence[Mapping[str, torch.Tensor]],
    anchors: torch.Tensor,
    stride: int,
    *,
    box_loss: Literal["ciou", "giou", "mse"] = "ciou",
    box_weight: float = 5.0,
    obj_weight: float = 1.0,
    noobj_weight: float = 0.5,
    cls_weight: float = 1.0,
    ignore_iou: float | None = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The detector's loss: box + binary cross-entropy objectness + cross-entropy classes.

    - box (mean over the K assigned objects): ``"mse"`` is YOLOv2's squared error on the encoding
      (sigmoid offsets and log factors, ``encode_boxes``); ``"ciou"`` (default) and ``"giou"`` are
      torchvision's complete / generalized IoU losses on the decoded boxes (Zheng et al., AAAI 2020;
      Rezatofighi et al., CVPR 2019), which measure overlap directly, as YOLOv4/v5 do.
    - objectness: BCE with target 1 at the assigned anchors (weight ``obj_weight``) and 0 elsewhere
      (weight ``noobj_weight``, YOLOv1's λ_noobj), summed and divided by max(K, 1); with
      ``ignore_iou``, unassigned predictions whose decoded box overlaps a ground-truth box of their
      image with IoU > ``ignore_iou`` take no no-object loss (YOLOv2 §2, YOLOv3).
    - classes: cross-entropy of the class logits at the assigned anchors (mean over K).

    ``box_weight`` defaults to YOLOv1's λ_coord. Computed in float32 whatever the outputs' dtype
    (bf16 under autocast). Returns ``(total, parts)`` with ``parts`` the
    unweighted ``box``, ``obj`` (weighted by obj/noobj), ``cls`` losses, detached.
    """
    if box_loss not in ("ciou", "giou", "mse"):
        raise ValueError(f"yolo_loss: box_loss={box_loss!r}; expected 'ciou', 'giou' or 'mse'")
    outputs = outputs.float()  # bf16 under autocast: IoU losses and exp() need float32
    n, _, grid_h, grid_w, _ = outputs.shape
    if len(targets) != n:
        raise ValueError(
            f"yolo_loss: {len(targets)} targets for a batch of {n}; expected one per image"
        )
    anchors = anchors.to(outputs.device)
    a = assign_targets(targets, anchors, stride, (grid_h, grid_w))
    count = len(a.image)
    assigned = outputs[a.image, a.anchor, a.row, a.col]  # K x (5+K_classes)
    zero = outputs.sum() * 0.0  # keeps the graph (and DDP) happy when nothing is assigned

    if count:
        anchor_sizes = anchors[a.anchor].to(outputs.dtype)
        predicted = torch.cat(
            [assigned[:, :2].sigmoid(), assigned[:, 2:4].clamp(-_MAX_LOG_SCALE, _MAX_LOG_SCALE)], 1
        )
        if box_loss == "mse":
            wanted = encode_boxes(a.boxes.to(outputs.dtype), a.row, a.col, anchor_sizes, stride)
            loss_box = F.mse_loss(predicted, wanted, reduction="sum") / count
        else:
            boxes = decode_boxes(predicted, a.row, a.col, anchor_sizes, stride)
            fn = ops.complete_box_iou_loss if box_loss == "ciou" else ops.generalized_box_iou_loss
            loss_box = fn(boxes, a.boxes.to(boxes.dtype), reduction="mean")
        loss_cls = F.cross_entropy(assigned[:, 5:], a.labels)
    else:
        loss_box = loss_cls = zero

    objectness = outputs[..., 4]
    target_obj = torch.zeros_like(objectness)
    target_obj[a.image, a.anchor, a.row, a.col] = 1.0
    weight = torch.full_like(objectness, noobj_weight)
    weight[a.image, a.anchor, a.row, a.col] = obj_weight
    if ignore_iou is not None:
        with torch.no_grad():
            boxes, _, _ = decode_outputs(outputs.detach(), anchors, stride)
            for i, target in enumerate(targets):
                if len(target["boxes"]) == 0:
                    continue
                gt = target["boxes"].to(device=boxes.device, dtype=boxes.dtype)
                best = ops.box_iou(boxes[i].reshape(-1, 4), gt).max(dim=1).values
                ignored = (best > ignore_iou).view(objectness.shape[1:]) & (target_obj[i] == 0)
                weight[i][ignored] = 0.0
    loss_obj = F.binary_cross_entropy_with_logits(
        objectness, target_obj, weight, reduction="sum"
    ) / max(count, 1)
    total = box_weight * loss_box + loss_obj + cls_weight * loss_cls
    parts = {"box": loss_box.detach(), "obj": loss_obj.detach(), "cls": loss_cls.detach()}
    return total, parts


def postprocess(
    outputs: torch.Tensor,
    anchors: torch.Tensor,
    stride: int,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    multi_label: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Raw outputs (N, B, S_h, S_w, 5 + K) → one dict per image, ``boxes`` (D, 4) xyxy pixels
    clipped to the input (S_h·s × S_w·s), ``scores`` (D,), ``labels`` (D,) int64, by descending score.

    Each anchor of each cell proposes one box with its most probable class; its score is
    objectness × that class's probability (YOLOv2's class-specific confidence). With
    ``multi_label`` it proposes the box once for every class whose score reaches
    ``score_threshold`` (Ultralytics' ``multi_label`` NMS, which its validation uses): an item the
    classifier hesitates over is then still found, at a lower score, under its second-best class,
    which is what mAP rewards (on the Fashion-MNIST scenes +0.02 mAP@0.5 for a trained detector).
    Boxes scoring below ``score_threshold`` are dropped, then per-class NMS (``boxes.nms``: IoU >
    ``iou_threshold`` suppressed), then the best ``max_detections`` are kept. The low default
    threshold suits mAP (which needs the low-scoring tail); use ~0.25-0.5 to draw detections.
    """
    _, _, grid_h, grid_w, _ = outputs.shape
    boxes, objectness, probabilities = decode_outputs(
        outputs.detach(), anchors.to(outputs.device), stride
    )
    class_probability, labels = probabilities.max(dim=-1)
    scores = objectness * class_probability
    results = []
    for i in range(len(outputs)):
        image_boxes = ops.clip_boxes_to_image(
            boxes[i].reshape(-1, 4), (grid_h * stride, grid_w * stride)
        )
        image_scores, image_labels = scores[i].reshape(-1), labels[i].reshape(-1)
        if multi_label:
            every = objectness[i].reshape(-1, 1) * probabilities[i].reshape(len(image_boxes), -1)
            box_index, image_labels = (every >= score_threshold).nonzero(as_tuple=True)
            image_boxes, image_scores = image_boxes[box_index], every[box_index, image_labels]
        keep = nms(image_boxes, image_scores, iou_threshold, score_threshold, image_labels)
        keep = keep[:max_detections]
        results.append(
            {"boxes": image_boxes[keep], "scores": image_scores[keep], "labels": image_labels[keep]}
        )
    return results
