"""The ``detect`` task: streaming evaluation equal to pycocotools over the whole set (also when two
DDP processes each see half), anchors by IoU K-Means recorded in the model options and rebuilt,
multi-scale training that the loss follows, a tiny run whose loss falls, the CLI from ``train`` to
``evaluate`` and ``detect``, and ``slide``'s fully convolutional classifier."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.distributed as dist
from torch import nn

from cnnkit.cli import main
from cnnkit.data.datasets import DataMeta, ImageData
from cnnkit.detection import (
    assign_targets,
    encode_boxes,
    kmeans_anchors,
    mean_average_precision,
    postprocess,
    voc_ap,
    yolo_loss,
)
from cnnkit.models import create_model
from cnnkit.tasks import get_task
from cnnkit.tasks.detect import DETECTION_KEYS, Detect, DetectionEval

ANCHORS = torch.tensor([[8.0, 8.0], [16.0, 24.0], [24.0, 16.0]])
STRIDE, GRID, CLASSES = 4, 8, 3  # 32x32 inputs


class Geometry(nn.Module):
    """What the task reads from its model: anchors, stride, input_scale (no layers needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchors", ANCHORS.clone())
        self.stride = STRIDE
        self.input_scale = (1.0, 1.0)


def scenes(n: int, seed: int) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Raw grids (n, B, S, S, 5 + K) that find most of the targets' boxes, with noise, plus
    random confident false positives: an mAP well between 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    targets = []
    for _ in range(n):
        m = int(torch.randint(1, 4, (1,), generator=g))
        xy = torch.rand(m, 2, generator=g) * 20
        wh = 4 + torch.rand(m, 2, generator=g) * 10
        targets.append(
            {
                "boxes": torch.cat([xy, xy + wh], 1),
                "labels": torch.randint(0, CLASSES, (m,), generator=g),
            }
        )
    outputs = torch.randn(n, len(ANCHORS), GRID, GRID, 5 + CLASSES, generator=g) * 1.5
    outputs[..., 4] -= 2.0  # background objectness mostly low, a few confident false positives
    a = assign_targets(targets, ANCHORS, STRIDE, (GRID, GRID))
    encoded = encode_boxes(a.boxes, a.row, a.col, ANCHORS[a.anchor], STRIDE)
    noisy = encoded + torch.randn(encoded.shape, generator=g) * 0.15
    noisy[:, :2] = torch.logit(noisy[:, :2].clamp(0.02, 0.98))
    outputs[a.image, a.anchor, a.row, a.col, :4] = noisy
    outputs[a.image, a.anchor, a.row, a.col, 4] = 2 + torch.randn(len(a.image), generator=g)
    outputs[a.image, a.anchor, a.row, a.col, 5 + a.labels] += 3.0
    return outputs, targets


def streamed(task: Detect, outputs: torch.Tensor, targets: list, batch: int) -> DetectionEval:
    metric = task.eval_metrics()
    for start in range(0, len(outputs), batch):
        metric.update(outputs[start : start + batch], targets[start : start + batch])
    return metric


def detect_task() -> Detect:
    task = get_task("detect")
    assert isinstance(task, Detect)
    task.setup(Geometry())
    return task


# ---- streaming evaluation ------------------------------------------------------------------------
def test_streamed_metric_equals_pycocotools_and_voc_over_the_whole_set():
    task = detect_task()
    outputs, targets = scenes(24, seed=1)
    values = streamed(task, outputs, targets, batch=5).compute()
    # the reference: decode everything at once, then one pycocotools / VOC evaluation
    everything = postprocess(
        outputs, ANCHORS, STRIDE, task.score_threshold, task.nms_iou, multi_label=task.multi_label
    )
    coco = mean_average_precision(everything, targets)
    assert 0.2 < values["map_50"] < 0.95  # a case where the comparison means something
    for key in DETECTION_KEYS:
        assert values[key] == pytest.approx(coco[key], abs=1e-12)
    assert values["voc_map_50"] == pytest.approx(voc_ap(everything, targets)["map"], abs=1e-12)


def test_streamed_loss_is_the_image_weighted_mean_of_the_batch_losses():
    task = detect_task()
    outputs, targets = scenes(7, seed=2)
    values = streamed(task, outputs, targets, batch=4).compute()
    first, _ = yolo_loss(outputs[:4], targets[:4], ANCHORS, STRIDE)
    second, _ = yolo_loss(outputs[4:], targets[4:], ANCHORS, STRIDE)
    assert values["loss"] == pytest.approx((4 * float(first) + 3 * float(second)) / 7, rel=1e-6)


def test_streamed_metric_keeps_only_the_detections_on_the_cpu():
    task = detect_task()
    outputs, targets = scenes(6, seed=3)
    metric = streamed(task, outputs, targets, batch=3)
    assert len(metric.predictions) == len(metric.targets) == 6
    assert set(metric.predictions[0]) == {"boxes", "scores", "labels"}
    assert all(len(p["boxes"]) <= task.max_detections for p in metric.predictions)


def test_evaluation_without_any_ground_truth_gives_nan_not_an_error():
    task = detect_task()
    outputs, _ = scenes(2, seed=4)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    values = streamed(task, outputs, empty, batch=2).compute()
    assert math.isfinite(values["loss"]) and math.isnan(values["map"])


def test_under_ddp_the_per_image_lists_are_gathered_not_the_maps_averaged(monkeypatch):
    """Two processes simulated in one: this one is rank 0 and sees images 0, 2, 4, …; the
    collectives (``all_gather_object``, the trainer's summing ``reduce``) hand it rank 1's share
    (images 1, 3, 5, …), as the Gloo backend would. The mAP of the gathered lists is the whole
    set's; an average of the two ranks' mAPs would not be."""
    outputs, targets = scenes(10, seed=1)
    other = streamed(detect_task(), outputs[1::2], targets[1::2], batch=3)
    other_loss = other._loss
    assert other_loss is not None

    def all_gather_object(parts: list, mine: object) -> None:
        parts[:] = [mine, (other.predictions, other.targets)]

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    metric = streamed(detect_task(), outputs[0::2], targets[0::2], batch=3)
    mine = metric._loss
    assert mine is not None
    values = metric.compute(lambda sums: sums + other_loss)
    monkeypatch.undo()

    alone = streamed(detect_task(), outputs, targets, batch=3).compute()
    for key in ("map", "map_50", "mar_100", "voc_map_50"):
        assert values[key] == pytest.approx(alone[key], abs=1e-12), key
    assert values["loss"] == pytest.approx(float((mine[0] + other_loss[0]) / 10), rel=1e-12)
    halves = [
        streamed(detect_task(), outputs[r::2], targets[r::2], batch=3).compute()["map"]
        for r in (0, 1)
    ]
    assert abs(sum(halves) / 2 - alone["map"]) > 1e-4  # averaging would have been wrong


# ---- anchors and the model -----------------------------------------------------------------------
def box_data(sizes: list[tuple[float, float]]) -> ImageData:
    targets = [
        {"boxes": torch.tensor([[1.0, 2.0, 1.0 + w, 2.0 + h]]), "labels": torch.tensor([0])}
        for w, h in sizes
    ]
    meta = DataMeta("boxes", (1, 32, 32), ("a", "b", "c"), (0.5,), (0.25,))
    images = torch.zeros(len(sizes), 1, 32, 32, dtype=torch.uint8)
    return ImageData(meta, {"train": (images, targets), "valid": None, "test": None})


def test_anchors_are_the_iou_kmeans_of_the_training_box_sizes():
    sizes = [(4, 4), (4.5, 4.0), (4.0, 5.0), (20, 10), (21, 11), (10, 22), (9, 20)]
    task = get_task("detect", num_anchors=3)
    anchors = task.model_options_from_data(box_data(sizes))["anchors"]
    expected, _ = kmeans_anchors(torch.tensor(sizes, dtype=torch.float64), k=3)
    assert anchors == [[round(float(v), 2) for v in a] for a in expected]
    # three obvious clusters, sorted by area: (4.17, 4.33), (9.5, 21), (20.5, 10.5)
    assert anchors == [[4.17, 4.33], [9.5, 21.0], [20.5, 10.5]]


def test_fewer_boxes_than_anchors_gives_one_anchor_per_box():
    anchors = get_task("detect").model_options_from_data(box_data([(4, 4), (8, 16)]))["anchors"]
    assert anchors == [[4.0, 4.0], [8.0, 16.0]]


def test_decoding_before_setup_says_what_is_missing():
    with pytest.raises(RuntimeError, match="setup"):
        get_task("detect").decode(torch.zeros(1, 3, 2, 2, 8))


# ---- multi-scale training ------------------------------------------------------------------------
def test_multi_scale_training_resizes_the_batch_and_the_loss_scales_the_boxes():
    torch.manual_seed(0)
    model = create_model(
        "yolo", num_classes=CLASSES, anchors=ANCHORS.tolist(), multi_scale=[32, 48],
        multi_scale_every=2,
    ).train()  # fmt: skip
    task = get_task("detect")
    task.setup(model)
    target = [{"boxes": torch.tensor([[8.0, 4.0, 24.0, 28.0]]), "labels": torch.tensor([1])}]
    sides = [model.training_size(b) for b in range(6)]
    assert sides[0] == sides[1] and sides[2] == sides[3]  # a new draw every 2 batches
    output = model(torch.rand(1, 1, 64, 64))
    side = sides[0]
    assert output.shape[2:4] == (side // STRIDE, side // STRIDE)
    assert model.input_scale == (side / 64, side / 64)
    # the loss sees the boxes in the resized image: 64 -> side scales every coordinate
    scaled = [{"boxes": target[0]["boxes"] * side / 64, "labels": target[0]["labels"]}]
    expected, _ = yolo_loss(output, scaled, model.anchors, STRIDE)
    loss, _ = task.loss(output, target)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)


def test_multi_scale_is_off_in_eval_mode():
    model = create_model("yolo", num_classes=2, multi_scale=[32], multi_scale_every=1).eval()
    assert model(torch.rand(1, 1, 64, 64)).shape[2:4] == (16, 16)
    assert model.input_scale == (1.0, 1.0)


def test_multi_scale_sides_must_be_multiples_of_the_stride():
    with pytest.raises(ValueError, match="multiples of the stride 4"):
        create_model("yolo", num_classes=2, multi_scale=[30])


# ---- training ------------------------------------------------------------------------------------
def test_a_tiny_run_learns_its_loss_falls():
    """32 scenes of 64x64 with at most 2 items, 4 epochs of 4 steps of 8 (about 5 s on one core).

    The loss, not mAP: measured on 128 such scenes for 8 epochs (64 steps), validation mAP@0.5
    stays at 0.01 while the loss falls from 14.3 to 7.7; detecting takes thousands of steps. Here the
    training loss of the last epoch must be under 80% of the first's (measured: 13.7 -> 10.0, 73%)."""
    from cnnkit.data.datasets import load_data
    from cnnkit.train import Trainer

    torch.manual_seed(0)
    task = get_task("detect")
    options = {"n_train": 32, "n_valid": 8, "n_test": 8, "canvas": 64, "max_objects": 2}
    data = load_data("scenes", task="detect", options=options)
    model = task.build_model("yolo", data.meta, **task.model_options_from_data(data))
    trainer = Trainer(model, task=task, device="cpu", progress=False, lr=3e-3, seed=0)
    history = trainer.fit(data.batches("train", 8, shuffle=True), epochs=4)
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert {"loss_box", "loss_obj", "loss_cls"} <= set(history[0])


def test_cli_train_evaluate_detect_on_a_tiny_run(tmp_path, capsys):
    run = tmp_path / "run"
    options = ["n_train=16", "n_valid=8", "n_test=8", "canvas=64", "max_objects=2"]
    argv = ["train", "--task", "detect", "--data", "scenes", "--model", "yolo", "--epochs", "1"]
    argv += [f"--data-option={o}" for o in options]
    argv += ["--batch-size", "8", "--device", "cpu", "--no-progress", "--out", str(run)]
    argv += ["--model-option", "multi_scale=[48, 64, 80]", "--model-option", "multi_scale_every=1"]
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    anchors = config["model"]["options"]["anchors"]
    assert len(anchors) == 5 and config["task"]["name"] == "detect"
    assert config["model"]["options"]["multi_scale"] == [48, 64, 80]
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert {f"test_{k}" for k in (*DETECTION_KEYS, "loss", "voc_map_50")} <= set(metrics)
    assert (run / "precision_recall.png").is_file() and (run / "detections.png").is_file()

    # evaluate rebuilds the model from config.json: the recorded anchors
    from cnnkit.cli._common import load_run

    _, _, model, _, _ = load_run(run)
    torch.testing.assert_close(model.anchors, torch.tensor(anchors))
    capsys.readouterr()
    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "map_50" in printed and "VOC 11-point mAP@0.5" in printed

    from cnnkit.data.scenes import make_scenes

    make_scenes(2, "test", 7, canvas=96, max_objects=2).save_images(tmp_path / "images")
    images = sorted(str(p) for p in (tmp_path / "images").glob("*.png"))
    out = tmp_path / "detected"
    argv = ["detect", str(run), *images, "--out", str(out), "--score-threshold", "0"]
    assert main([*argv, "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000001.png"]
    results = json.loads((out / "detections.json").read_text())
    assert results and set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    # boxes in the 96x96 files' pixels (the model saw 64x64), COCO's [x, y, w, h]
    assert all(r["bbox"][0] + r["bbox"][2] <= 96.01 and r["bbox"][2] >= 0 for r in results)
    listing = json.loads((out / "images.json").read_text())
    assert listing["images"][0] == {"id": 1, "file_name": images[0], "width": 96, "height": 96}


# ---- slide: the notes' classifier as a fully convolutional network ---------------------------
@pytest.fixture
def classification_run(tmp_path):
    """A tiny fashion_cnn run on 28x28 items (two steps on random images is enough: the
    conversion is checked against the same weights, trained or not)."""
    from cnnkit.data import TensorBatches
    from cnnkit.train import Trainer

    torch.manual_seed(0)
    meta = DataMeta("fashion-mnist", (1, 28, 28), tuple("abcdefghij"), (0.29,), (0.35,))
    model = create_model("fashion_cnn")
    config = {
        "model": {"name": "fashion_cnn", "num_classes": 10, "in_channels": 1, "options": {}},
        "data": meta.to_config(),
    }
    trainer = Trainer(model, device="cpu", progress=False, out_dir=tmp_path / "cls", config=config)
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    trainer.fit(TensorBatches(images, torch.randint(0, 10, (16,)), 8), epochs=1)
    return tmp_path / "cls", meta


def test_slide_at_the_training_size_equals_the_classifier(classification_run):
    from cnnkit.cli._common import load_run
    from cnnkit.cli.slide import slide

    run, meta = classification_run
    _, _, model, _, _ = load_run(run)
    item = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    scores = slide(model, meta, item)
    assert scores.shape == (10, 1, 1)
    with torch.no_grad():
        expected = model(meta.preprocess(item).unsqueeze(0)).softmax(1)[0]
    torch.testing.assert_close(scores[:, 0, 0], expected, atol=1e-5, rtol=1e-5)


def test_slide_over_a_scene_gives_one_probability_grid_per_class(classification_run):
    from cnnkit.cli._common import load_run
    from cnnkit.cli.slide import slide

    run, meta = classification_run
    _, _, model, _, _ = load_run(run)
    scene = torch.randint(0, 256, (1, 128, 128), dtype=torch.uint8)
    scores = slide(model, meta, scene)
    # 128 -> pools 64, 32, 16 -> the first dense layer as a 3x3 'valid' convolution: 14 x 14
    # windows. (A window is not exactly the 28x28 crop's answer: inside a scene the 'same'
    # convolutions see the neighbouring pixels where the crop saw zero padding.)
    assert scores.shape == (10, 14, 14)
    torch.testing.assert_close(scores.sum(0), torch.ones(14, 14))


def test_cli_slide_writes_the_heat_map(classification_run, tmp_path, capsys):
    from cnnkit.data.scenes import make_scenes

    run, _ = classification_run
    make_scenes(1, "test", 3, canvas=128).save_images(tmp_path / "scene")
    out = tmp_path / "heat.png"
    argv = ["slide", str(run), str(tmp_path / "scene" / "000000.png"), "--out", str(out)]
    assert main([*argv, "--top", "3"]) == 0
    assert out.is_file() and "14x14 windows of 28x28" in capsys.readouterr().out


# ---- annotated datasets --------------------------------------------------------------------------
def test_an_annotation_folder_loads_as_a_detection_dataset_stretched_with_its_boxes(tmp_path):
    from cnnkit.data.annotations import write_annotations
    from cnnkit.data.datasets import load_data, load_data_from_meta
    from cnnkit.data.scenes import make_scenes

    scenes = make_scenes(20, "train", 4, canvas=48, max_objects=2)
    scenes.save_images(tmp_path / "images")
    write_annotations(scenes.to_annotations(tmp_path / "images"), tmp_path, "coco")
    data = load_data(tmp_path, task="detect", image_size=32, channels=1)
    assert data.meta.input_size == (1, 32, 32) and data.meta.source["format"] == "coco"
    assert [len(data.splits[s][1]) for s in ("train", "valid", "test")] == [15, 3, 2]
    # the same seeded split and the boxes stretched 48 -> 32 with the images
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0)).tolist()
    first = data.train[1][0]
    torch.testing.assert_close(first["boxes"], scenes.boxes[order[0]] * 32 / 48)
    assert torch.equal(first["labels"], scenes.labels[order[0]])
    again = load_data_from_meta(data.meta)
    torch.testing.assert_close(again.test[1][1]["boxes"], data.test[1][1]["boxes"])
    assert torch.equal(again.test[0], data.test[0])


def test_detect_and_slide_help_import_no_torch():
    """`cnnkit detect --help` and `cnnkit slide --help` stay instant (torch is imported in run)."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom cnnkit.cli import main\n"
        "for name in ('detect', 'slide'):\n"
        "    try:\n        main([name, '--help'])\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'matplotlib', 'torchvision') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "--score-threshold" in result.stdout and "--top" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_commands_checkpoint_names_are_the_run_directory_s():
    from cnnkit.cli import detect, slide
    from cnnkit.train import rundir

    assert (detect.BEST, detect.LAST) == (slide.BEST, slide.LAST) == (rundir.BEST, rundir.LAST)


def test_precision_recall_curves_average_to_pycocotools_ap_at_that_threshold():
    from cnnkit.detection.metrics import precision_recall_curves

    outputs, targets = scenes(12, seed=5)
    predictions = postprocess(outputs, ANCHORS, STRIDE, 0.01, 0.5)
    curves = precision_recall_curves(predictions, targets, 0.5)
    per_class = mean_average_precision(predictions, targets, iou_thresholds=[0.5])["per_class"]
    assert sorted(curves) == sorted({int(c) for t in targets for c in t["labels"]})
    for label, (recall, precision) in curves.items():
        assert recall.tolist() == pytest.approx([k / 100 for k in range(101)])
        assert (precision[:-1] >= precision[1:]).all()  # COCO's interpolated: non-increasing
        assert precision.mean() == pytest.approx(per_class[label], abs=1e-12)
