"""Two small detection measurements of issue 12, one process, run alone on the machine.

    python benchmarks/nms_anchors.py [--boxes 10000] [--rounds 7] [--n-train 20000]

1. **NMS time** for ``--boxes`` random boxes (a 640×640 image, sizes 8–128 px, uniform scores):
   ``cnnkit.detection.nms`` against ``torchvision.ops.nms`` (class-agnostic) and against
   ``torchvision.ops.batched_nms`` (per class, 10 classes), interleaved rounds, medians. cnnkit's is
   torchvision's plus argument checks: the kept indices must be identical, and are checked.
2. **Anchors**: YOLOv2's IoU K-Means (``kmeans_anchors``) against Euclidean K-Means on (w, h)
   (scikit-learn, ``euclidean_kmeans_anchors``) on the boxes of ``--n-train`` training scenes, for
   k = 1…9: the mean IoU of each box with its best anchor (YOLOv2's "Avg IOU", table 1).

Prints two markdown tables with ``lscpu``'s model name and flags.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from peers import cpu_line


def random_boxes(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g) * 640
    size = 8 + torch.rand(n, 2, generator=g) * 120
    boxes = torch.cat([centre - size / 2, centre + size / 2], 1)
    return boxes, torch.rand(n, generator=g), torch.randint(0, 10, (n,), generator=g)


def median_ms(fn, rounds: int, repeats: int = 5) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        times.append((time.perf_counter() - start) / repeats * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from torchvision import ops

    from cnnkit.data.scenes import make_scenes
    from cnnkit.detection import nms
    from cnnkit.detection.anchors import euclidean_kmeans_anchors, kmeans_anchors

    print(f"CPU: {cpu_line()}; {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    boxes, scores, labels = random_boxes(args.boxes)
    cases = {
        "class-agnostic": (
            lambda: nms(boxes, scores, 0.5),
            lambda: ops.nms(boxes, scores, 0.5),
        ),
        "per class (10)": (
            lambda: nms(boxes, scores, 0.5, labels=labels),
            lambda: ops.batched_nms(boxes, scores, labels, 0.5),
        ),
    }
    print(f"| NMS of {args.boxes:,} boxes, IoU 0.5 | kept | cnnkit ms | torchvision ms | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, (ours, theirs) in cases.items():
        kept = ours()
        if not torch.equal(kept, theirs()):
            raise SystemExit(f"{name}: cnnkit's kept indices differ from torchvision's")
        a, b = [], []
        for _ in range(args.rounds):  # interleaved
            a += median_ms(ours, 1)
            b += median_ms(theirs, 1)
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {name} | {len(kept)} | {ma:.2f} | {mb:.2f} | {ma / mb:.2f} |")

    scenes = make_scenes(args.n_train, "train", seed=0)
    sizes = torch.cat([b[:, 2:] - b[:, :2] for b in scenes.boxes]).double()
    print(f"\n{len(sizes):,} training boxes; mean IoU of each box with its best anchor:\n")
    print("| k | IoU K-Means (YOLOv2) | Euclidean K-Means (scikit-learn) |")
    print("|---:|---:|---:|")
    for k in range(1, 10):
        _, ours_iou = kmeans_anchors(sizes, k=k)
        _, euclid_iou = euclidean_kmeans_anchors(sizes, k=k)
        print(f"| {k} | {ours_iou:.4f} | {euclid_iou:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
