"""Where a localization run's IoU goes: centre error, size error, and the IoU each would give alone.

    python benchmarks/localize_errors.py runs/localize/resnet18_narrow-1

Loads the run's best weights, predicts the boxes of its own test split (rebuilt from ``config.json``,
so scenes come out identical) and prints the mean IoU, the median and mean distance between predicted
and true centres (pixels), the median relative size error, and the mean IoU with the true centre
(predicted size) and with the true size (predicted centre).
"""

from __future__ import annotations

import argparse

import torch
from torchvision.ops import box_iou

from cnnkit.cli._common import load_run
from cnnkit.data.datasets import load_data_from_meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory of `cnnkit train --task localize`")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    _, _, model, task, meta = load_run(args.run)
    images, targets = load_data_from_meta(meta).splits["test"]
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([
            task.decode_boxes(model(meta.preprocess(images[i : i + args.batch_size]))["boxes"])
            for i in range(0, len(images), args.batch_size)
        ])  # fmt: skip
    true = targets["boxes"].float()
    centre_p, centre_t = (predicted[:, :2] + predicted[:, 2:]) / 2, (true[:, :2] + true[:, 2:]) / 2
    size_p, size_t = predicted[:, 2:] - predicted[:, :2], true[:, 2:] - true[:, :2]
    distance = (centre_p - centre_t).norm(dim=1)

    def mean_iou(centre: torch.Tensor, size: torch.Tensor) -> float:
        boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
        return box_iou(boxes, true).diag().mean().item()

    print(f"mean IoU                      {box_iou(predicted, true).diag().mean().item():.3f}")
    print(
        f"centre error (median, mean)   {distance.median().item():.2f} px, {distance.mean().item():.2f} px"
    )
    print(f"relative size error (median)  {((size_p - size_t).abs() / size_t).median().item():.3f}")
    print(f"IoU with the true centre      {mean_iou(centre_t, size_p):.3f}")
    print(f"IoU with the true size        {mean_iou(centre_p, size_t):.3f}")


if __name__ == "__main__":
    main()
