"""Anchor boxes by K-Means on the training boxes' sizes (Redmon & Farhadi, "YOLO9000: Better,
Faster, Stronger", CVPR 2017, §2 "Dimension Clusters"; the notes: "finds five representative bounding
box dimensions, called anchor boxes, by applying K-Means to the height and width of bounding boxes").

Sizes are (w, h) in pixels. YOLOv2's distance is d(box, anchor) = 1 - IoU(box, anchor) with the two
boxes sharing one centre (``boxes.wh_iou``), so a large box is not "far" from its anchor merely
because its numbers are large, as it is under the Euclidean distance. ``euclidean_kmeans_anchors``
is the baseline the paper compares with (scikit-learn's ``KMeans``).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans

from cnnkit.detection.boxes import wh_iou


def _check_sizes(box_sizes: torch.Tensor | np.ndarray, k: int, where: str) -> torch.Tensor:
    sizes = torch.as_tensor(np.asarray(box_sizes), dtype=torch.float64)
    if sizes.dim() != 2 or sizes.shape[1] != 2:
        raise ValueError(
            f"{where}: box_sizes has shape {tuple(sizes.shape)}; expected (N, 2) (w, h)"
        )
    if not torch.isfinite(sizes).all() or (sizes <= 0).any():
        row = int((~torch.isfinite(sizes) | (sizes <= 0)).any(dim=1).nonzero()[0])
        raise ValueError(
            f"{where}: box_sizes[{row}] is {sizes[row].tolist()}; expected a finite width and "
            "height > 0"
        )
    if not 1 <= k <= len(sizes):
        raise ValueError(f"{where}: k={k} with {len(sizes)} boxes; expected 1 <= k <= {len(sizes)}")
    return sizes


def _by_area(anchors: torch.Tensor) -> torch.Tensor:
    return anchors[torch.argsort(anchors[:, 0] * anchors[:, 1], stable=True)]


def mean_best_iou(
    box_sizes: torch.Tensor | np.ndarray, anchors: torch.Tensor | np.ndarray
) -> float:
    """The mean over the boxes of the IoU with their best anchor, centres aligned (the paper's
    "Avg IOU", table 1)."""
    sizes = torch.as_tensor(np.asarray(box_sizes), dtype=torch.float64)
    anchors = torch.as_tensor(np.asarray(anchors), dtype=torch.float64)
    return float(wh_iou(sizes, anchors).max(dim=1).values.mean())


def kmeans_anchors(
    box_sizes: torch.Tensor | np.ndarray,
    k: int = 5,
    seed: int = 0,
    max_iter: int = 300,
    restarts: int = 5,
) -> tuple[torch.Tensor, float]:
    """K-Means with the 1 - IoU distance (YOLOv2) on box sizes (N, 2) as (w, h).

    Lloyd's iterations: each box joins the anchor it overlaps most (centres aligned), each anchor
    becomes the mean size of its boxes (YOLOv2's centroids; an emptied cluster is re-seeded with the
    box its anchors fit worst), until the assignment stops changing. Seeds are k-means++-style (each
    new seed drawn with probability proportional to its 1 - IoU distance to the nearest seed);
    ``restarts`` runs from different seeds keep the one with the highest mean best IoU.

    Written by hand: scikit-learn's ``KMeans`` only does Euclidean distance, and this is a few lines
    of tensor code.

    Returns:
        ``(anchors, mean_iou)``: the k anchors (k, 2) float32 (w, h) sorted by area, smallest first,
        and the mean over the boxes of the IoU with their best anchor.
    """
    sizes = _check_sizes(box_sizes, k, "kmeans_anchors")
    generator = torch.Generator().manual_seed(seed)
    best_anchors, best_iou = None, -1.0
    for _ in range(max(1, restarts)):
        anchors = _seed_anchors(sizes, k, generator)
        assignment = None
        for _ in range(max_iter):
            iou = wh_iou(sizes, anchors)  # N x k
            new_assignment = iou.argmax(dim=1)
            if assignment is not None and torch.equal(new_assignment, assignment):
                break
            assignment = new_assignment
            counts = torch.bincount(assignment, minlength=k)
            sums = torch.zeros(k, 2, dtype=sizes.dtype).index_add_(0, assignment, sizes)
            anchors = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], anchors)
            for empty in (counts == 0).nonzero().flatten().tolist():
                worst = int(wh_iou(sizes, anchors).max(dim=1).values.argmin())
                anchors[empty] = sizes[worst]
        mean_iou = mean_best_iou(sizes, anchors)
        if mean_iou > best_iou:
            best_anchors, best_iou = anchors, mean_iou
    assert best_anchors is not None
    return _by_area(best_anchors).float(), best_iou


def _seed_anchors(sizes: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    chosen = [int(torch.randint(len(sizes), (1,), generator=generator))]
    for _ in range(1, k):
        distance = 1 - wh_iou(sizes, sizes[chosen]).max(dim=1).values
        if distance.sum() <= 0:  # every box already has an identical seed
            chosen.append(int(torch.randint(len(sizes), (1,), generator=generator)))
        else:
            chosen.append(int(torch.multinomial(distance, 1, generator=generator)))
    return sizes[chosen].clone()


def euclidean_kmeans_anchors(
    box_sizes: torch.Tensor | np.ndarray, k: int = 5, seed: int = 0
) -> tuple[torch.Tensor, float]:
    """The baseline: scikit-learn's Euclidean ``KMeans`` (k-means++, 10 initializations) on the
    (w, h) pairs. Same return as ``kmeans_anchors``: anchors sorted by area and the mean best IoU."""
    sizes = _check_sizes(box_sizes, k, "euclidean_kmeans_anchors")
    model = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(sizes.numpy())
    anchors = torch.from_numpy(model.cluster_centers_)
    return _by_area(anchors).float(), mean_best_iou(sizes, anchors)
