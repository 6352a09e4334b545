"""How a trained detector's test mAP depends on the decoding, and how much of it the classes cost
(issue 12): one forward pass over a run's test split, then every decoding variant on the same raw
grids, scored by ``cnnkit.detection.mean_average_precision`` (pycocotools).

    python benchmarks/detection_decoding.py runs/detect/yolo-1 [--nms 0.5 0.6 0.7]

Prints, per NMS IoU threshold, mAP@0.5, mAP@[.5:.95] and mAR@100 with one label per box and with
multi-label decoding (``postprocess(multi_label=True)``, the task's default); then the
class-agnostic mAP (every label set to 0: are the items found, whatever their class?) and the
recall at IoU >= 0.5 of any detection, by item size. The gap between the agnostic and the class-aware
mAP is what the classification costs.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a `cnnkit train --task detect` run directory")
    parser.add_argument("--checkpoint", default="best.safetensors")
    parser.add_argument("--nms", type=float, nargs="+", default=[0.5, 0.6, 0.7])
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args(argv)

    from torchvision.ops import box_iou

    from cnnkit.cli._common import load_run
    from cnnkit.data.datasets import load_data_from_meta
    from cnnkit.detection import mean_average_precision, postprocess

    torch.set_grad_enabled(False)
    _, _, model, task, meta = load_run(args.run, args.checkpoint)
    if task.name != "detect":
        raise SystemExit(f"{args.run}: a {task.name} run; expected a detection run")
    model.eval()
    task.setup(model)
    data = load_data_from_meta(meta, workers=0)
    outputs, targets = [], []
    batches = data.batches("test", args.batch_size, device=torch.device("cpu"), workers=0)
    for x, batch_targets in batches:
        outputs.append(model(x))
        targets += [
            {"boxes": t["boxes"].float(), "labels": t["labels"].long()} for t in batch_targets
        ]
    grid = torch.cat(outputs)
    anchors, stride = model.anchors, model.stride
    threshold, most = task.score_threshold, task.max_detections  # type: ignore[attr-defined]

    print(f"{args.run} ({args.checkpoint}), {len(targets)} test images")
    print(f"{'decoding':<12s} {'NMS IoU':>7s} {'mAP@0.5':>8s} {'mAP':>7s} {'mAR@100':>8s}")
    for iou in args.nms:
        for multi in (False, True):
            found = postprocess(grid, anchors, stride, threshold, iou, most, multi_label=multi)
            summary = mean_average_precision(found, targets)
            name = "multi-label" if multi else "one label"
            print(
                f"{name:<12s} {iou:7.2f} {summary['map_50']:8.4f} {summary['map']:7.4f} "
                f"{summary['mar_100']:8.4f}"
            )
    found = postprocess(grid, anchors, stride, threshold, task.nms_iou, most)  # type: ignore[attr-defined]
    agnostic = [{**d, "labels": torch.zeros_like(d["labels"])} for d in found]
    agnostic_targets = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
    summary = mean_average_precision(agnostic, agnostic_targets)
    print(f"class-agnostic: mAP@0.5 {summary['map_50']:.4f}, mAP {summary['map']:.4f}")
    hits, totals = Counter[int](), Counter[int]()
    for detections, target in zip(agnostic, agnostic_targets, strict=True):
        if not len(target["boxes"]):
            continue
        best = (
            box_iou(target["boxes"], detections["boxes"]).max(dim=1).values
            if len(detections["boxes"])
            else torch.zeros(len(target["boxes"]))
        )
        side = (target["boxes"][:, 2:] - target["boxes"][:, :2]).prod(dim=1).sqrt()
        for s, b in zip(side.tolist(), best.tolist(), strict=True):
            totals[int(s // 16)] += 1
            hits[int(s // 16)] += b >= 0.5
    print("recall at IoU >= 0.5, any class, by item size (sqrt of the box area):")
    for k in sorted(totals):
        print(f"  {16 * k:3d}-{16 * k + 15:3d} px  {hits[k] / totals[k]:6.1%}  ({totals[k]} items)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
