"""The peer benchmark's bridge from Ultralytics to cnnkit (``benchmarks/detection_vs_ultralytics.py``):
YOLOv8n's boxes become cnnkit detections that ``mean_average_precision`` scores as pycocotools
would. Hand-made ``Results.boxes`` tensors stand in for Ultralytics, which is not a cnnkit
dependency."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from cnnkit.detection import mean_average_precision

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("detection_vs_ultralytics")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_yolo_boxes_become_detections_by_descending_score(bench: ModuleType) -> None:
    # Results.boxes as Ultralytics gives them: float class ids, any order
    xyxy = torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 30.0, 30.0], [5.0, 5.0, 99.5, 120.0]])
    conf = torch.tensor([0.2, 0.9, 0.5])
    cls = torch.tensor([3.0, 0.0, 9.0])
    found = bench.yolo_detections(xyxy, conf, cls)
    assert torch.equal(found["boxes"], xyxy[[1, 2, 0]])
    assert found["scores"].tolist() == pytest.approx([0.9, 0.5, 0.2])
    assert found["labels"].dtype == torch.int64
    assert found["labels"].tolist() == [0, 9, 3]


def test_converted_detections_score_as_pycocotools_counts_them(bench: ModuleType) -> None:
    # scene 1: a perfect box; scene 2: a box at IoU 0.62 (60 x 62 inside 60 x 100) matches at
    # thresholds 0.50, 0.55, 0.60 only, and a wrong class that must not count
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[0.0, 0.0, 60.0, 100.0]]), "labels": torch.tensor([7])},
    ]
    results = [
        (torch.tensor([[10.0, 10.0, 40.0, 50.0]]), torch.tensor([0.8]), torch.tensor([2.0])),
        (
            torch.tensor([[0.0, 0.0, 60.0, 62.0], [0.0, 0.0, 60.0, 100.0]]),
            torch.tensor([0.7, 0.6]),
            torch.tensor([7.0, 1.0]),
        ),
    ]
    predictions = [bench.yolo_detections(*r) for r in results]
    summary = mean_average_precision(predictions, targets)
    # class 2: AP 1 at every threshold; class 7: AP 1 at 3 of 10 thresholds, 0 elsewhere;
    # class 1 has no ground truth and is left out of the mean (pycocotools)
    assert summary["per_class"][2] == pytest.approx(1.0)
    assert summary["per_class"][7] == pytest.approx(0.3)
    assert summary["map"] == pytest.approx((1.0 + 0.3) / 2)
    assert summary["map_50"] == pytest.approx(1.0)


def test_an_empty_result_is_an_empty_detection_list(bench: ModuleType) -> None:
    found = bench.yolo_detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0))
    assert found["boxes"].shape == (0, 4)
    assert found["scores"].shape == found["labels"].shape == (0,)


def test_fractional_class_ids_are_refused(bench: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"class ids \[2.5\] are not whole numbers"):
        bench.yolo_detections(torch.ones(1, 4), torch.ones(1), torch.tensor([2.5]))
