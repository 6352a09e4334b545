"""cnnkit.detection.anchors: K-Means with the 1 - IoU distance finds known clusters of box sizes."""

import pytest
import torch

from cnnkit.detection.anchors import euclidean_kmeans_anchors, kmeans_anchors, mean_best_iou

CENTRES = torch.tensor([[8.0, 8.0], [40.0, 20.0], [20.0, 80.0]])  # (w, h), by area: 64, 800, 1600


def clustered_sizes(per_cluster: int = 100, spread: float = 0.05, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = 1 + (torch.rand(len(CENTRES) * per_cluster, 2, generator=g) - 0.5) * 2 * spread
    return CENTRES.repeat_interleave(per_cluster, dim=0) * noise


def test_kmeans_recovers_known_clusters_sorted_by_area():
    anchors, mean_iou = kmeans_anchors(clustered_sizes(), k=3)
    # each cluster is uniform within ±5% of its centre, so its mean is the centre to within ~1%
    assert torch.allclose(anchors, CENTRES, rtol=0.02)
    assert mean_iou > 0.9


def test_mean_iou_is_the_mean_best_iou_of_the_boxes_to_their_anchors():
    sizes = torch.tensor([[10.0, 10.0], [10.0, 20.0]])
    anchors = torch.tensor([[10.0, 10.0]])
    # 10x10 vs 10x10: 1; 10x20 vs 10x10: 100 / 200 = 0.5
    assert mean_best_iou(sizes, anchors) == pytest.approx(0.75)


def test_kmeans_reports_the_mean_best_iou_of_its_anchors():
    sizes = clustered_sizes(seed=1)
    anchors, mean_iou = kmeans_anchors(sizes, k=3, seed=1)
    assert mean_iou == pytest.approx(mean_best_iou(sizes, anchors), abs=1e-6)


def test_kmeans_is_deterministic_for_a_seed():
    sizes = clustered_sizes(seed=2)
    assert torch.equal(kmeans_anchors(sizes, k=5, seed=3)[0], kmeans_anchors(sizes, k=5, seed=3)[0])


def test_iou_kmeans_fits_small_boxes_better_than_euclidean():
    # many small boxes and a few big ones of very different shapes: the Euclidean distance spends
    # its clusters on the big boxes' spread (YOLOv2, table 1: IoU clusters give a higher avg IoU)
    g = torch.Generator().manual_seed(4)
    small = torch.tensor([[6.0, 12.0], [12.0, 6.0]]).repeat_interleave(200, 0)
    big = 60 + torch.rand(40, 2, generator=g) * 140
    sizes = torch.cat([small * (1 + 0.1 * torch.rand(400, 2, generator=g)), big])
    _, iou_kmeans = kmeans_anchors(sizes, k=3)
    _, euclidean = euclidean_kmeans_anchors(sizes, k=3)
    assert iou_kmeans > euclidean


def test_euclidean_baseline_recovers_known_clusters():
    anchors, mean_iou = euclidean_kmeans_anchors(clustered_sizes(), k=3)
    assert torch.allclose(anchors, CENTRES, rtol=0.02)
    assert mean_iou > 0.9


@pytest.mark.parametrize(
    ("sizes", "k", "message"),
    [
        ([[10.0, 10.0], [0.0, 5.0]], 1, r"box_sizes\[1\] is \[0.0, 5.0\]"),
        ([[10.0, 10.0]], 2, "k=2 with 1 boxes"),
        ([[10.0, 10.0, 1.0]], 1, r"expected \(N, 2\)"),
    ],
)
def test_bad_sizes_are_a_clear_error(sizes, k, message):
    with pytest.raises(ValueError, match=message):
        kmeans_anchors(torch.tensor(sizes), k=k)
