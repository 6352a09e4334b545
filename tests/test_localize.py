"""The localize task (classification + localization, Géron ch. 14): the box encoding, the loss with
the notes' 0.8 / 0.2 weights, the metrics on hand cases, the localizer model's contract, a tiny
training run that learns, and train → evaluate → predict --out through the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.models import create_model, model_info
from cnnkit.tasks import get_task
from cnnkit.tasks.localize import Localize, paired_iou


def _task(**options) -> Localize:
    task = get_task("localize", **options)
    assert isinstance(task, Localize)
    return task


def _output(logits, boxes) -> dict[str, torch.Tensor]:
    return {"logits": torch.tensor(logits, dtype=torch.float32), "boxes": torch.tensor(boxes)}


def _target(labels, boxes) -> dict[str, torch.Tensor]:
    return {"labels": torch.tensor(labels), "boxes": torch.tensor(boxes, dtype=torch.float32)}


# ---- the box encoding ---------------------------------------------------------------------------


def test_the_sqrt_encoding_is_the_normalized_centre_and_the_roots_of_the_size():
    # A 200 x 100 (W x H) image, box x 20..70, y 10..46: centre (45, 28) px, size 50 x 36 px;
    # normalized: cx 45/200 = 0.225, cy 28/100 = 0.28, w 50/200 = 0.25, h 36/100 = 0.36.
    task = _task(image_size=(100, 200))
    encoded = task.encode_boxes(torch.tensor([[20.0, 10.0, 70.0, 46.0]]))
    assert encoded[0].tolist() == pytest.approx([0.225, 0.28, 0.5, 0.6])  # sqrt 0.25, sqrt 0.36


def test_the_plain_encoding_keeps_the_normalized_size():
    task = _task(image_size=(100, 200), box_encoding="plain")
    encoded = task.encode_boxes(torch.tensor([[20.0, 10.0, 70.0, 46.0]]))
    assert encoded[0].tolist() == pytest.approx([0.225, 0.28, 0.25, 0.36])


@pytest.mark.parametrize("encoding", ["sqrt", "plain"])
def test_decoding_inverts_encoding(encoding):
    task = _task(image_size=(64, 96), box_encoding=encoding)
    boxes = torch.tensor(
        [[0.0, 0.0, 96.0, 64.0], [10.5, 3.0, 20.0, 40.25], [50.0, 60.0, 51.0, 61.0]]
    )
    assert torch.allclose(task.decode_boxes(task.encode_boxes(boxes)), boxes, atol=1e-4)


def test_under_sqrt_a_10_pixel_error_costs_less_on_a_large_box_than_on_a_small_one():
    # The notes' reason. On a 100-pixel image, widths 81 -> 91 px and 9 -> 19 px: plain, both differ
    # by 0.1; sqrt, by sqrt(.91) - sqrt(.81) = 0.0539 and sqrt(.19) - sqrt(.09) = 0.1359.
    true = torch.tensor([[0.0, 0.0, 81.0, 50.0], [0.0, 0.0, 9.0, 50.0]])
    wider = true + torch.tensor([0.0, 0.0, 10.0, 0.0])
    for encoding, large, small in (("sqrt", 0.0539, 0.1359), ("plain", 0.1, 0.1)):
        task = _task(image_size=(100, 100), box_encoding=encoding)
        width_error = (task.encode_boxes(wider) - task.encode_boxes(true))[:, 2]
        assert width_error.tolist() == pytest.approx([large, small], abs=1e-4)


def test_a_negative_plain_size_decodes_as_an_empty_box_not_an_inverted_one():
    task = _task(image_size=(10, 10), box_encoding="plain")
    decoded = task.decode_boxes(torch.tensor([[0.5, 0.5, -0.2, 0.4]]))
    assert decoded[0].tolist() == pytest.approx([5.0, 3.0, 5.0, 7.0])


def test_an_unknown_encoding_or_missing_image_size_is_an_error_that_says_why():
    with pytest.raises(ValueError, match="box_encoding: expected one of sqrt, plain, got 'log'"):
        get_task("localize", box_encoding="log")
    with pytest.raises(ValueError, match="image size is unknown"):
        _task().encode_boxes(torch.zeros(1, 4))


# ---- the loss -----------------------------------------------------------------------------------


def test_the_loss_is_0_8_cross_entropy_plus_0_2_box_mse():
    # Two classes with equal logits: cross-entropy ln 2. The whole 100 x 100 image as the true box
    # encodes to (0.5, 0.5, 1, 1); the prediction (0.5, 0.5, 0.5, 1) misses one number by 0.5:
    # MSE over the 4 numbers 0.25 / 4 = 0.0625. Total 0.8 ln 2 + 0.2 * 0.0625 = 0.567018.
    task = _task(image_size=(100, 100))
    total, parts = task.loss(
        _output([[0.0, 0.0]], [[0.5, 0.5, 0.5, 1.0]]), _target([0], [[0, 0, 100, 100]])
    )
    assert parts["classification"].item() == pytest.approx(math.log(2))
    assert parts["box"].item() == pytest.approx(0.0625)
    assert total.item() == pytest.approx(0.8 * math.log(2) + 0.2 * 0.0625)


def test_the_loss_weights_are_options():
    task = _task(image_size=(100, 100), class_weight=0.0, box_weight=1.0)
    total, _ = task.loss(
        _output([[0.0, 0.0]], [[0.5, 0.5, 0.5, 1.0]]), _target([0], [[0, 0, 100, 100]])
    )
    assert total.item() == pytest.approx(0.0625)
    assert task.options() == {
        "box_encoding": "sqrt", "class_weight": 0.0, "box_weight": 1.0, "giou_weight": 0.0,
        "image_size": [100, 100],
    }  # fmt: skip


def test_the_giou_term_adds_the_generalized_iou_loss_of_the_decoded_boxes():
    # (0.5, 0.5, sqrt 0.25, sqrt 1) decodes to x 37.5..62.5, y 0..100 in the 100 x 100 image: IoU
    # with the whole image 0.25, the enclosing box is the true box, so GIoU = 0.25, loss 0.75
    task = _task(image_size=(100, 100), giou_weight=2.0)
    total, parts = task.loss(
        _output([[0.0, 0.0]], [[0.5, 0.5, 0.5, 1.0]]), _target([0], [[0, 0, 100, 100]])
    )
    assert parts["giou"].item() == pytest.approx(0.75)
    assert total.item() == pytest.approx(0.8 * math.log(2) + 0.2 * 0.0625 + 2.0 * 0.75)
    # disjoint boxes: IoU 0, GIoU = -(enclosing - union) / enclosing, a loss above 1
    _, parts = task.loss(
        _output([[0.0, 0.0]], [[0.25, 0.5, 0.5, 0.5]]), _target([0], [[50, 25, 100, 75]])
    )
    # predicted (25, 50, 25 x 25): x 12.5..37.5, y 37.5..62.5 (area 625); true 50..100 x 25..75
    # (2500); enclosing 12.5..100 x 25..75 (4375): GIoU = 0 - (4375 - 3125) / 4375, loss 1 + 2/7
    assert parts["giou"].item() == pytest.approx(1 + 2 / 7)
    with pytest.raises(ValueError, match="giou_weight=-1.0"):
        _task(giou_weight=-1.0)


def test_the_loss_refuses_targets_without_boxes_naming_what_it_found():
    task = _task(image_size=(10, 10))
    with pytest.raises(TypeError, match=r"targets are Tensor; expected a dict with 'labels'"):
        task.loss(_output([[0.0, 0.0]], [[0.5, 0.5, 0.5, 0.5]]), torch.tensor([0]))


# ---- the metrics --------------------------------------------------------------------------------


def test_metrics_on_hand_cases_iou_1_iou_0_and_a_wrong_class():
    # Sqrt encoding on a 100 x 100 image: (0.25, 0.25, sqrt 0.3, sqrt 0.3) is the box 10..40 x 10..40.
    task = _task(image_size=(100, 100))
    root = math.sqrt(0.3)
    here, elsewhere = [0.25, 0.25, root, root], [0.75, 0.75, root, root]  # 60..90: disjoint
    metric = task.eval_metrics()
    metric.update(
        _output([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0]], [here, elsewhere, here]),
        _target([0, 0, 0], [[10, 10, 40, 40]] * 3),
    )
    scores = metric.compute()
    assert scores["accuracy"] == pytest.approx(2 / 3)  # the third image's class is wrong
    assert scores["mean_iou"] == pytest.approx((1 + 0 + 1) / 3, abs=1e-5)
    assert scores["hit_rate"] == pytest.approx(1 / 3)  # IoU 1 and the right class: the first only


def test_a_box_with_iou_under_0_5_is_no_hit_even_with_the_right_class():
    # True 0..10 x 0..10, predicted 5..15 x 0..10: intersection 50, union 150, IoU 1/3.
    assert paired_iou(
        torch.tensor([[5.0, 0, 15, 10]]), torch.tensor([[0.0, 0, 10, 10]])
    ).item() == (pytest.approx(1 / 3))
    task = _task(image_size=(100, 100), box_encoding="plain")
    metric = task.eval_metrics()
    metric.update(_output([[5.0, 0.0]], [[0.10, 0.05, 0.1, 0.1]]), _target([0], [[0, 0, 10, 10]]))
    assert metric.compute()["hit_rate"] == 0.0
    assert metric.compute()["mean_iou"] == pytest.approx(1 / 3)


def test_evaluation_reports_the_loss_and_its_parts():
    task = _task(image_size=(100, 100))
    metric = task.eval_metrics()
    metric.update(_output([[0.0, 0.0]], [[0.5, 0.5, 0.5, 1.0]]), _target([0], [[0, 0, 100, 100]]))
    scores = metric.compute()
    assert scores["loss"] == pytest.approx(0.8 * math.log(2) + 0.2 * 0.0625)
    assert scores["class_loss"] == pytest.approx(math.log(2))
    assert scores["box_loss"] == pytest.approx(0.0625)


# ---- decoding and printing ----------------------------------------------------------------------


def test_decode_gives_probabilities_the_best_class_and_the_box_in_pixels():
    task = _task(image_size=(100, 200))
    (decoded,) = task.decode(_output([[0.0, math.log(3)]], [[0.225, 0.28, 0.5, 0.6]]))
    assert decoded["probs"].tolist() == pytest.approx([0.25, 0.75])
    assert (decoded["label"], decoded["score"]) == (1, pytest.approx(0.75))
    assert decoded["box"].tolist() == pytest.approx([20.0, 10.0, 70.0, 46.0])
    lines = task.format_prediction(decoded, ["cat", "dog"], top=2)
    assert lines == [
        "box  (20.0, 10.0, 70.0, 46.0)  xyxy px of the 200x100 input",
        "dog             75.00%",
        "cat             25.00%",
    ]


def test_an_empty_predicted_box_is_drawn_not_refused():
    # A plain size below 0 decodes as an empty box; torchvision refuses x2 < x1, which the
    # inclusive drawing convention (x2 - 1) would give it.
    task = _task(image_size=(32, 32), box_encoding="plain")
    (decoded,) = task.decode(_output([[1.0, 0.0]], [[0.5, 0.5, -0.1, -0.1]]))
    drawn = task.draw_prediction(torch.zeros(1, 32, 32, dtype=torch.uint8), decoded, ["a", "b"])
    assert drawn.shape == (3, 64, 64) and drawn.dtype == torch.uint8


# ---- the model ----------------------------------------------------------------------------------


def test_the_localizer_is_registered_with_the_localize_contract_and_rebuilds_by_name():
    assert model_info("localizer").task == "localize"
    model = create_model("localizer", backbone="fashion_cnn", num_classes=10, in_channels=1)
    out = model(torch.zeros(2, 1, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"logits": (2, 10), "boxes": (2, 4)}
    # the soft-argmax scores start at zero: every cell weighs the same, the centre is the image's
    assert out["boxes"][:, :2].flatten().tolist() == [0.5] * 4


def test_the_soft_argmax_centre_is_the_centre_of_the_cell_that_dominates():
    from cnnkit.models.localizer import SoftArgmaxCentre

    centre = SoftArgmaxCentre(1)
    with torch.no_grad():
        centre.score.weight.fill_(100.0)  # one cell scores 100, the others 0: weight ~ 1 - 15e-44
    features = torch.zeros(1, 1, 4, 4)
    features[0, 0, 1, 3] = 1.0  # row 1, column 3 of a 4 x 4 map: centre ((3.5)/4, (1.5)/4)
    assert centre(features)[0].tolist() == pytest.approx([0.875, 0.375])


def test_the_dense_head_box_is_the_dominant_cells_centre_plus_its_offset_and_its_size():
    from cnnkit.models.localizer import weighted_cell_box

    cells = torch.zeros(1, 4, 16, 16)
    cells[0, :, 5, 9] = torch.tensor([0.25, -0.5, 0.3, 0.4])  # row 5, column 9
    weights = torch.zeros(1, 256)
    weights[0, 5 * 16 + 9] = 1.0
    # centre ((9 + 0.5 + 0.25) / 16, (5 + 0.5 - 0.5) / 16), the size passed through
    expected = [9.75 / 16, 5.0 / 16, 0.3, 0.4]
    assert weighted_cell_box(weights, cells)[0].tolist() == pytest.approx(expected)
    # two cells weighted 1/4 and 3/4: the weighted mean of their boxes
    cells[0, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0, 2.0])
    weights[0, 0], weights[0, 5 * 16 + 9] = 0.25, 0.75
    mean = [
        0.25 * a + 0.75 * b for a, b in zip([0.5 / 16, 0.5 / 16, 1.0, 2.0], expected, strict=True)
    ]
    assert weighted_cell_box(weights, cells)[0].tolist() == pytest.approx(mean)


def test_the_dense_head_reads_the_stride_8_stage_and_starts_at_the_image_centre():
    model = create_model("localizer", backbone="resnet18_narrow", centre="dense")
    assert model.feature_info[model.dense.stage]["reduction"] == 8  # box_stage=-3 by default
    out = model(torch.zeros(2, 1, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"logits": (2, 10), "boxes": (2, 4)}
    assert out["boxes"].flatten().tolist() == [0.5, 0.5, 0.0, 0.0] * 2  # zero-initialized scores
    with pytest.raises(
        ValueError, match=r"box_stage=5 .* 5 stages; expected an index in \[-5, 4\]"
    ):
        create_model("localizer", backbone="resnet18_narrow", centre="dense", box_stage=5)


def test_the_crop_classifier_resamples_the_inside_of_the_box_x_then_y_in_pixels():
    from cnnkit.models.localizer import CropClassifier

    image = torch.zeros(1, 1, 64, 64)
    image[0, 0, 40:60, 20:30] = 1.0  # rows (y) 40..60, columns (x) 20..30
    crop = CropClassifier(1, 8).crops(image, torch.tensor([[20.0, 40.0, 30.0, 60.0]]))[0, 0]
    assert crop.shape == (8, 8)
    assert crop[1:-1, 1:-1].eq(1.0).all()  # inside the box: the square only
    assert crop.min() > 0.5  # the edge samples blend in a little of the outside (bilinear)
    beside = CropClassifier(1, 8).crops(image, torch.tensor([[30.0, 40.0, 40.0, 60.0]]))
    assert beside[0, 0, :, 1:].eq(0.0).all()  # the next box to the right: background


def test_the_crop_look_takes_the_tasks_encoding_and_needs_the_dense_head():
    from cnnkit.data.datasets import DataMeta

    meta = DataMeta("scenes", (1, 64, 64), tuple("abcdefghij"), (0.1,), (0.3,))
    task = _task(box_encoding="plain")
    spec = task.model_spec("resnet18_narrow", meta, {"centre": "dense", "crop": 16})
    assert spec["options"] == {
        "backbone": "resnet18_narrow", "centre": "dense", "crop": 16, "box_encoding": "plain"
    }  # fmt: skip
    model = task.build_model("resnet18_narrow", meta, centre="dense", crop=16)
    assert model.box_encoding == "plain"
    assert model.classifier.in_features == 256 + 64 + 128  # pooled, attended, crop
    out = model(torch.rand(2, 1, 64, 64))
    assert torch.isfinite(out["logits"]).all()  # the first boxes are empty: still finite
    with pytest.raises(ValueError, match="crop=16 with centre='soft-argmax'"):
        create_model("localizer", backbone="resnet18_narrow", crop=16)
    with pytest.raises(ValueError, match="backbone_input=32 with crop=0"):
        create_model("localizer", backbone="resnet18_narrow", centre="dense", backbone_input=32)


def test_with_backbone_input_the_backbone_sees_the_downscaled_image_and_the_crop_the_full_one():
    model = create_model(
        "localizer", backbone="resnet18_narrow", centre="dense", crop=8, backbone_input=32
    ).eval()
    seen: dict[str, tuple[int, ...]] = {}
    model.backbone.register_forward_hook(lambda m, args, out: seen.update(backbone=args[0].shape))
    model.crop.register_forward_hook(lambda m, args, out: seen.update(crop=args[0].shape))
    x = torch.rand(2, 1, 96, 96)
    model(x)
    assert seen == {"backbone": (2, 1, 32, 32), "crop": (2, 1, 96, 96)}


def test_build_model_and_the_recorded_spec_build_the_same_model():
    from cnnkit.data.datasets import DataMeta
    from cnnkit.models.checkpoints import load_state_dict_strict

    meta = DataMeta("scenes", (1, 64, 64), tuple("abcdefghij"), (0.1,), (0.3,))
    task = _task()
    model = task.build_model("lenet5", meta, centre="pooled", head="rbf")
    spec = task.model_spec("lenet5", meta, {"centre": "pooled", "head": "rbf"})
    assert spec == {
        "name": "localizer", "num_classes": 10, "in_channels": 1,
        "options": {"backbone": "lenet5", "centre": "pooled", "backbone_options": {"head": "rbf"}},
    }  # fmt: skip
    assert task.image_size == (64, 64)  # taken from the data, recorded in options()
    rebuilt = create_model(
        spec["name"], spec["num_classes"], spec["in_channels"], **spec["options"]
    )
    load_state_dict_strict(rebuilt, model.state_dict())


# ---- training -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_scenes():
    """Single-object Fashion-MNIST scenes on 64 x 64 canvases: 400 to train, 200 to validate."""
    from cnnkit.data.datasets import load_data

    options = {"n_train": 400, "n_valid": 200, "n_test": 16, "canvas": 64}
    return load_data("scenes", task="localize", options=options)


def test_a_tiny_run_learns_both_the_class_and_the_box(small_scenes):
    from cnnkit.train import Trainer

    # LeNet-5 (1,342 images/s on one CPU core at 64 px): 8 epochs of 400 scenes in about 4 s.
    data = small_scenes
    task = _task()
    model = task.build_model("lenet5", data.meta)
    trainer = Trainer(model, task=task, lr=1e-2, device="cpu", progress=False, seed=0)
    trainer.fit(data.batches("train", 32, shuffle=True), epochs=8)
    scores = trainer.evaluate(data.batches("valid", 200))
    # What a model that ignores the image reaches: the mean training box for every image (0.41 on
    # these scenes). Measured: mean IoU 0.52, accuracy 0.31; the thresholds keep half the margin
    # over the baseline, and twice the 10% of guessing among 10 classes (3 standard errors of an
    # accuracy measured on 200 images below the measured one).
    boxes = data.valid[1]["boxes"]
    mean_box = data.train[1]["boxes"].mean(0, keepdim=True).expand_as(boxes)
    baseline = paired_iou(mean_box, boxes).mean().item()
    assert scores["mean_iou"] > baseline + 0.06, (scores, baseline)
    assert scores["accuracy"] > 0.2, scores


# ---- the command line ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def localize_run(tmp_path_factory):
    from cnnkit.cli import main

    out = tmp_path_factory.mktemp("runs") / "localize"
    code = main(
        ["train", "--task", "localize", "--data", "scenes", "--model", "fashion_cnn",
         "--data-option", "n_train=32", "--data-option", "n_valid=16", "--data-option", "n_test=16",
         "--data-option", "canvas=32", "--epochs", "1", "--batch-size", "16",
         "--task-option", "box_encoding=plain", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    return out


def test_train_records_the_localizer_and_writes_the_report(localize_run):
    from cnnkit.train import rundir

    config = json.loads((localize_run / rundir.CONFIG).read_text())
    assert config["model"] == {
        "name": "localizer", "num_classes": 10, "in_channels": 1,
        "options": {"backbone": "fashion_cnn"},
    }  # fmt: skip
    assert config["task"] == {
        "name": "localize",
        "options": {
            "box_encoding": "plain", "class_weight": 0.8, "box_weight": 0.2, "giou_weight": 0.0,
            "image_size": [32, 32]
        },
    }  # fmt: skip
    test = json.loads((localize_run / rundir.TEST_METRICS).read_text())
    assert set(test) >= {"test_loss", "test_accuracy", "test_mean_iou", "test_hit_rate"}
    with Image.open(localize_run / rundir.LOCALIZATION_PLOT) as grid:
        # 16 images of 32 px drawn at x2, 4 per row, 4 px padding: 4 * 64 + 5 * 4 = 276
        assert (grid.mode, grid.size) == ("RGB", (276, 276))


def test_evaluate_prints_the_localization_report(localize_run, capsys):
    from cnnkit.cli import main

    assert main(["evaluate", str(localize_run)]) == 0
    out = capsys.readouterr().out
    test = json.loads((localize_run / "test_metrics.json").read_text())
    assert "16 images" in out
    assert f"mean IoU   {test['test_mean_iou']:.4f}" in out
    assert f"hit rate   {test['test_hit_rate']:.2%}" in out


def test_predict_prints_the_box_and_draws_it_with_out(localize_run, tmp_path, capsys):
    from cnnkit.cli import main

    image = tmp_path / "scene.png"
    pixels = torch.zeros(64, 64, dtype=torch.uint8)
    pixels[10:40, 20:50] = 200
    Image.fromarray(pixels.numpy()).save(image)
    drawn = tmp_path / "drawn"
    assert main(["predict", str(localize_run), str(image), "--out", str(drawn)]) == 0
    out = capsys.readouterr().out
    assert "xyxy px of the 32x32 input" in out and f"drawn: {drawn / 'scene.png'}" in out
    with Image.open(drawn / "scene.png") as picture:
        # the 64 px image enlarged x2, RGB, with a red box somewhere on it
        assert (picture.mode, picture.size) == ("RGB", (128, 128))
        assert (np.asarray(picture) == (230, 0, 0)).all(-1).any()
