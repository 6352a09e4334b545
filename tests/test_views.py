"""The deployment tools for localization, detection and segmentation (issue 16): each task's view
draws, tabulates and serves its predictions, and its ONNX export decodes, outside the graph, to
what the PyTorch model decodes to.

One tiny run per task, trained for one epoch by ``cnnkit train`` on a few Fashion-MNIST scenes,
serves the export, report and app tests. References: the PyTorch model and ``task.decode`` (the
ONNX path must agree with them), ``test_metrics.json`` (the report's tables), the pixel rules of
``torchvision.utils.draw_bounding_boxes`` (PIL's rectangle: both corner pixels included) and
``draw_segmentation_masks`` (``image * (1 - alpha) + colour * alpha``, truncated to uint8).
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from deploy_runs import app_client

from cnnkit.cli import main
from cnnkit.deploy.views import get_view
from cnnkit.train import rundir

TASKS = ("localize", "detect", "segment")


def _train(out, task: str, model: str, data_options: list[str], *extra: str):
    argv = ["train", "--task", task, "--data", "scenes", "--model", model, "--epochs", "1"]
    argv += [f"--data-option={option}" for option in data_options]
    argv += ["--batch-size", "8", "--device", "cpu", "--workers", "0", "--no-progress"]
    assert main([*argv, "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three runs, trained lazily (a test of one task trains only that task's run)."""
    root = tmp_path_factory.mktemp("runs")
    made: dict[str, object] = {}
    recipes = {
        "localize": ("fashion_cnn", ["n_train=16", "n_valid=8", "n_test=16", "canvas=32"],
                     ("--tensorboard",)),
        "detect": ("yolo", ["n_train=16", "n_valid=8", "n_test=8", "canvas=32", "max_objects=2"],
                   ("--model-option", "hidden_channels=16")),
        "segment": ("unet", ["n_train=16", "n_valid=8", "n_test=8", "canvas=32", "max_objects=2"],
                    ("--model-option", "base_width=4", "--model-option", "depth=2")),
    }  # fmt: skip

    def get(task: str):
        if task not in made:
            model, options, extra = recipes[task]
            made[task] = _train(root / task, task, model, options, *extra)
        return made[task]

    return get


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory, fashion_mnist):
    """Two 32 × 32 test scenes as PNG files (what a user would pass or upload)."""
    from cnnkit.data.scenes import make_scenes

    folder = tmp_path_factory.mktemp("scenes")
    make_scenes(2, "test", 5, canvas=32, max_objects=2, data=fashion_mnist[2]).save_images(folder)
    return sorted(folder.glob("*.png"))


def _load(run):
    from cnnkit.cli._common import load_run

    _, _, model, task, meta = load_run(run)
    return model, task, meta


def _test_batch(meta, n: int = 8) -> torch.Tensor:
    from cnnkit.data.datasets import load_data_from_meta

    data = load_data_from_meta(meta, workers=0)
    x, _ = next(iter(data.batches("test", n, device=torch.device("cpu"), workers=0)))
    return x


# ---- ONNX ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="the optional extra 'onnx' is not installed")
    folder = tmp_path_factory.mktemp("onnx")
    done: dict[str, object] = {}

    def get(task: str):
        if task not in done:
            path = folder / f"{task}.onnx"
            assert main(["export", str(runs(task)), "--onnx", str(path), "--dynamic-batch"]) == 0
            done[task] = path
        return done[task]

    return get


def _assert_same_decoding(task_name: str, expected, got) -> None:
    if task_name == "segment":
        assert torch.equal(expected, got)
        return
    assert len(expected) == len(got)
    for mine, theirs in zip(expected, got, strict=True):
        keys = ("label", "score", "box", "probs") if task_name == "localize" else mine.keys()
        for key in keys:
            torch.testing.assert_close(
                torch.as_tensor(theirs[key]), torch.as_tensor(mine[key]), atol=1e-4, rtol=0
            )


@pytest.mark.parametrize("task_name", TASKS)
def test_onnxruntime_gives_the_models_outputs_and_decodes_to_its_predictions(
    task_name, runs, exported
):
    from cnnkit.deploy.onnx import OnnxModel, max_difference

    model, task, meta = _load(runs(task_name))
    onnx_model = OnnxModel(exported(task_name), threads=1)
    x = _test_batch(meta)
    with torch.no_grad():
        expected = model(x)
    got = onnx_model(x)
    view = get_view(task_name)
    assert type(got) is type(expected)  # the localizer's dict is rebuilt
    assert max_difference(view.graph_outputs(expected), view.graph_outputs(got)) <= 1e-4
    _assert_same_decoding(task_name, task.decode(expected), onnx_model.task.decode(got))


def test_the_export_names_its_outputs_and_records_what_decoding_needs(runs, exported):
    import onnx

    outputs = {}
    for task_name in TASKS:
        props = {p.key: p.value for p in onnx.load(str(exported(task_name))).metadata_props}
        outputs[task_name] = json.loads(props["cnnkit.outputs"])
        assert props["cnnkit.postprocess"].startswith("none in the graph")
        if task_name == "detect":
            model, _, _ = _load(runs("detect"))
            assert json.loads(props["cnnkit.anchors"]) == model.anchors.tolist()
            assert int(props["cnnkit.stride"]) == model.stride == 4  # fashion_cnn's last stage
    assert outputs == {"localize": ["logits", "boxes"], "detect": ["grid"], "segment": ["logits"]}


def test_a_detect_export_without_its_anchors_names_the_missing_field(runs, exported, tmp_path):
    import onnx

    from cnnkit.deploy.onnx import OnnxModel

    proto = onnx.load(str(exported("detect")))
    kept = [p for p in proto.metadata_props if p.key != "cnnkit.anchors"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    path = tmp_path / "no-anchors.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ValueError, match=f"{path}: metadata field 'cnnkit.anchors' is missing"):
        OnnxModel(path)


def test_predict_onnx_prints_what_predict_prints_for_a_localization_run(
    runs, exported, scene_files, capsys
):
    paths = [str(p) for p in scene_files]
    capsys.readouterr()
    assert main(["predict", str(runs("localize")), *paths]) == 0
    pytorch = capsys.readouterr().out
    assert main(["predict", "--onnx", str(exported("localize")), *paths]) == 0
    assert capsys.readouterr().out == pytorch
    assert pytorch.count("xyxy px of the 32x32 input") == 2


@pytest.mark.parametrize("command", ["detect", "segment"])
def test_detect_and_segment_onnx_write_what_the_run_writes(
    command, runs, exported, scene_files, tmp_path, capsys
):
    """The same files written: for detection every detection (threshold 0) with its class, score
    and box to onnxruntime's rounding, for segmentation the label maps pixel for pixel."""
    paths = [str(p) for p in scene_files]
    extra = ["--score-threshold", "0"] if command == "detect" else []
    capsys.readouterr()
    assert main([command, str(runs(command)), *paths, "--out", str(tmp_path / "a"), *extra]) == 0
    pytorch = capsys.readouterr().out.replace(str(tmp_path / "a"), "OUT")
    onnx_argv = [command, "--onnx", str(exported(command)), *paths, "--out", str(tmp_path / "b")]
    assert main([*onnx_argv, *extra]) == 0
    onnx_out = capsys.readouterr().out.replace(str(tmp_path / "b"), "OUT")
    if command == "detect":
        # the lines naming each file, its number of detections and the drawing
        assert [line for line in onnx_out.splitlines() if "->" in line] == [
            line for line in pytorch.splitlines() if "->" in line
        ]
        mine, theirs = (json.loads((tmp_path / d / "detections.json").read_text()) for d in "ab")
        assert len(mine) == len(theirs) > 0
        for a, b in zip(mine, theirs, strict=True):
            assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
            assert a["score"] == pytest.approx(b["score"], abs=2e-5)
            assert a["bbox"] == pytest.approx(b["bbox"], abs=0.011)  # rounded to 0.01 px
    else:
        from PIL import Image

        assert onnx_out == pytorch
        for path in scene_files:
            maps = [Image.open(tmp_path / d / f"{path.stem}_labels.png").tobytes() for d in "ab"]
            assert maps[0] == maps[1]


def test_detect_onnx_refuses_a_file_of_another_task(exported, scene_files, tmp_path, capsys):
    argv = ["detect", "--onnx", str(exported("segment")), str(scene_files[0])]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert "a segment run; `cnnkit detect` takes detect runs" in capsys.readouterr().err


# ---- drawing -------------------------------------------------------------------------------------


def _outline(x1: int, y1: int, x2: int, y2: int) -> list[tuple[int, int]]:
    """(row, column) of a 1-pixel rectangle's outline, both corners included (PIL's rectangle)."""
    columns = range(x1, x2 + 1)
    rows = range(y1, y2 + 1)
    return sorted({(y1, c) for c in columns} | {(y2, c) for c in columns}
                  | {(r, x1) for r in rows} | {(r, x2) for r in rows})  # fmt: skip


def _changed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    return (before != after).any(0)


def test_localize_draws_the_box_outline_in_red_and_its_caption_inside_only():
    """A 64 × 64 image is enlarged ×4 to 256; the box (8, 8, 40, 32) covers pixels 8..39 × 8..31,
    so ×4 its outline runs over columns 32..159 and rows 32..127 (``draw_annotations``: continuous
    coordinates, the last covered pixel is x2 - 1)."""
    from cnnkit.tasks.localize import PREDICTED_COLOR

    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 100, (1, 3, 64, 64), dtype=torch.uint8, generator=generator)
    decoded = [{"label": 2, "score": 0.93, "box": torch.tensor([8.0, 8.0, 40.0, 32.0]),
                "probs": torch.zeros(3)}]  # fmt: skip
    drawn = get_view("localize").draw(image, decoded, ["a", "b", "Pullover"])
    assert drawn.shape == (1, 3, 256, 256) and drawn.dtype == torch.uint8
    big = image[0].repeat_interleave(4, 1).repeat_interleave(4, 2)
    outline = _outline(32, 32, 159, 127)
    red = torch.tensor(PREDICTED_COLOR, dtype=torch.uint8)
    for row, column in outline:
        assert torch.equal(drawn[0, :, row, column], red), (row, column)
    changed = _changed(big, drawn[0])
    inside = torch.zeros_like(changed)
    inside[32:128, 32:160] = True
    assert not changed[~inside].any()  # nothing outside the box
    caption = changed.clone()
    for row, column in outline:
        caption[row, column] = False
    rows, columns = caption.nonzero().unbind(1)
    # "Pullover 93%" in the built-in font, at the box's top left corner
    assert caption.sum() > 50 and rows.max() < 32 + 16 and columns.max() < 32 + 80


def test_detect_draws_each_box_above_the_threshold_in_its_class_colour():
    """Boxes are drawn as ``cnnkit detect`` draws them (``draw_bounding_boxes`` on the integer
    corners, ×4 for a 64 px image); a detection under the 0.3 threshold is not drawn."""
    from PIL import ImageColor

    from cnnkit.viz.detection import PALETTE

    image = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    decoded = [{
        "boxes": torch.tensor([[2.0, 2.0, 20.0, 30.0], [30.0, 30.0, 60.0, 50.0], [40.0, 4.0, 60.0, 20.0]]),
        "scores": torch.tensor([0.9, 0.5, 0.2]),
        "labels": torch.tensor([0, 3, 1]),
    }]  # fmt: skip
    drawn = get_view("detect").draw(image, decoded, ["a", "b", "c", "d"])[0]
    assert drawn.shape == (3, 256, 256)
    for (x1, y1, x2, y2), label in [((8, 8, 80, 120), 0), ((120, 120, 240, 200), 3)]:
        colour = torch.tensor(ImageColor.getrgb(PALETTE[label]), dtype=torch.uint8)
        for row, column in _outline(x1, y1, x2, y2):
            assert torch.equal(drawn[:, row, column], colour), (label, row, column)
    changed = _changed(torch.zeros_like(drawn), drawn)
    drawn_area = torch.zeros_like(changed)
    drawn_area[8:121, 8:81] = True
    drawn_area[120:201, 120:241] = True
    assert not changed[
        ~drawn_area
    ].any()  # in particular, not the 0.2 box (rows 16..80, cols 160..240)


def test_segment_overlays_the_classes_in_cnnkit_segments_palette_and_leaves_background():
    """``draw_segmentation_masks`` at alpha 0.5: a class-k pixel becomes (pixel + colour_k) // 2
    (a float blend truncated to uint8), with the colours of ``viz.segmentation.class_colors``;
    image and labels enlarged ×43 (nearest) so the shorter side, 6, reaches 256."""
    from cnnkit.viz.segmentation import class_colors

    names = ["background", "T-shirt/top", "Trouser"]
    generator = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (1, 3, 6, 8), dtype=torch.uint8, generator=generator)
    labels = torch.zeros(1, 6, 8, dtype=torch.long)
    labels[0, 1:3, 2:5] = 1
    labels[0, 4:, 6:] = 2
    drawn = get_view("segment").draw(image, labels, names)
    assert drawn.shape == (1, 3, 6 * 43, 8 * 43)
    colours = torch.tensor(class_colors(len(names)), dtype=torch.int32)  # (K, 3)
    expected = image[0].int()
    for k in (1, 2):
        mask = labels[0] == k
        expected[:, mask] = (expected[:, mask] + colours[k][:, None]) // 2
    expected = expected.repeat_interleave(43, 1).repeat_interleave(43, 2)
    assert torch.equal(drawn[0].int(), expected)
    assert torch.equal(drawn[0, :, :43, :43].int(), image[0, :, :1, :1].int().expand(-1, 43, 43))


def test_tensorboard_gets_the_localizers_graph_and_its_drawn_boxes(runs):
    """The localizer returns a dict, which TensorBoard's tracer refuses: the graph is traced through
    the view's tuple of outputs, and the 8 validation scenes (32 px) are drawn at 256 px."""
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    events = event_accumulator.EventAccumulator(
        str(runs("localize") / "tensorboard"), size_guidance={event_accumulator.IMAGES: 0}
    ).Reload()
    assert any("Localizer[model]" in node.name for node in events.Graph().node)
    images = events.Images("predictions")
    assert [e.step for e in images] == [1] and images[0].height >= 256


# ---- the HTML report -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reports(runs):
    done: dict[str, str] = {}

    def get(task: str) -> str:
        if task not in done:
            run = runs(task)
            assert main(["report", str(run)]) == 0
            done[task] = (run / "report.html").read_text()
        return done[task]

    return get


def _metrics(run) -> dict:
    return json.loads((run / rundir.TEST_METRICS).read_text())


def _cells(report: str, title: str) -> list[list[str]]:
    """The body rows of the table under ``title``, as lists of cell texts."""
    table = report.split(f"<h3>{title}")[1].split("</table>")[0]
    body = table.split("<tbody>")[1]
    return [re.findall(r"<td>(.*?)</td>", row) for row in body.split("</tr>") if "<td>" in row]


def test_the_localization_report_holds_the_test_metrics_and_a_per_class_table(runs, reports):
    report, metrics = reports("localize"), _metrics(runs("localize"))
    assert f"<td>test_accuracy</td><td>{metrics['test_accuracy']:.2%}</td>" in report
    assert f"<td>test_mean_iou</td><td>{metrics['test_mean_iou']:.4f}</td>" in report
    assert f"<td>test_hit_rate</td><td>{metrics['test_hit_rate']:.2%}</td>" in report
    rows = _cells(report, "per true class, on the test split")
    assert len(rows) == 10  # Fashion-MNIST's classes
    assert sum(int(row[1]) for row in rows) == 16  # every test scene, once
    # the per-class hits add up to the test hit rate (both over the 16 test scenes)
    hits = sum(float(row[4].rstrip("%")) / 100 * int(row[1]) for row in rows if row[1] != "0")
    assert hits == pytest.approx(metrics["test_hit_rate"] * 16, abs=1e-3)


def test_the_detection_report_holds_the_coco_summary_and_the_ap_of_each_class(runs, reports):
    from cnnkit.tasks.detect import DETECTION_KEYS

    report, metrics = reports("detect"), _metrics(runs("detect"))
    for key in DETECTION_KEYS:
        value = metrics[f"test_{key}"]
        assert f"<td>test_{key}</td><td>{value:.4f}</td>" in report, key
    assert f"<td>test_voc_map_50</td><td>{metrics['test_voc_map_50']:.4f}</td>" in report
    rows = {row[0]: row[1:] for row in _cells(report, "AP per class")}
    assert set(rows) == set(metrics["per_class_ap"])
    for name, ap in metrics["per_class_ap"].items():
        assert rows[name][0] == ("-" if ap < 0 else f"{ap:.4f}"), name


def test_the_segmentation_report_holds_pixel_accuracy_mean_iou_and_each_class_iou(runs, reports):
    report, metrics = reports("segment"), _metrics(runs("segment"))
    assert f"<td>test_pixel_accuracy</td><td>{metrics['test_pixel_accuracy']:.2%}</td>" in report
    assert f"<td>test_mean_iou</td><td>{metrics['test_mean_iou']:.4f}</td>" in report
    rows = dict(_cells(report, "IoU per class"))
    assert list(rows) == list(metrics["per_class_iou"])
    for name, iou in metrics["per_class_iou"].items():
        assert rows[name] == ("absent" if iou is None else f"{iou:.4f}"), name


@pytest.mark.parametrize("task_name", TASKS)
def test_each_report_draws_its_sample_predictions_offline(task_name, reports):
    report = reports(task_name)
    assert "Sample predictions" in report and "<script" not in report and "http" not in report


# ---- the app -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(runs):
    return app_client([runs(task) for task in TASKS])


def _post(client, run, path) -> str:
    answer = client.post(
        "/predict", data={"run": run.name},
        files={"image": (path.name, path.read_bytes(), "image/png")},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.text


def _decoded(run, path):
    """What the PyTorch path decodes the file to (``cnnkit predict``'s steps)."""
    from cnnkit.cli.predict import read_image

    model, task, meta = _load(run)
    with torch.no_grad():
        return task.decode(model(meta.preprocess(read_image(path, meta.channels)).unsqueeze(0)))[0]


def test_the_app_shows_the_class_and_the_box_of_a_localization_run(client, runs, scene_files):
    run = runs("localize")
    page = _post(client, run, scene_files[0])
    decoded = _decoded(run, scene_files[0])
    _, _, meta = _load(run)
    name = meta.class_names[decoded["label"]]
    assert f'<p id="result">predicted: <b class="top1">{name}</b>' in page
    corners = ", ".join(f"{v:.1f}" for v in decoded["box"].tolist())
    assert f'<p id="box">box <span class="xyxy">({corners})</span>' in page
    assert '<img id="drawn"' in page and page.count('class="bar"') == 5


def test_the_app_lists_the_detections_above_the_threshold(client, runs, scene_files, monkeypatch):
    """One epoch leaves every score under the usual 0.3; the threshold is set to the third best
    score of the PyTorch path, so the list holds exactly its three best detections, in order."""
    from cnnkit.deploy import views_detect

    run = runs("detect")
    decoded = _decoded(run, scene_files[0])
    assert len(decoded["scores"]) > 3
    monkeypatch.setattr(views_detect, "SCORE_THRESHOLD", float(decoded["scores"][2]))
    page = _post(client, run, scene_files[0])
    assert '<p id="count">3 detections scoring' in page
    listed = re.findall(r'<li class="detection" data-class="([^"]*)" data-score="([0-9.]+)"', page)
    _, _, meta = _load(run)
    expected = [
        (meta.class_names[label], f"{score:.4f}")
        for label, score in zip(
            decoded["labels"][:3].tolist(), decoded["scores"][:3].tolist(), strict=True
        )
    ]
    assert listed == expected and '<ol id="result">' in page and '<img id="drawn"' in page


def test_the_app_gives_each_found_classs_share_of_the_pixels(client, runs, scene_files):
    run = runs("segment")
    page = _post(client, run, scene_files[1])
    decoded = _decoded(run, scene_files[1])
    _, _, meta = _load(run)
    counts = torch.bincount(decoded.reshape(-1), minlength=len(meta.class_names))
    expected = {
        meta.class_names[k]: f"{int(counts[k]) / decoded.numel():.4f}"
        for k in range(len(counts))
        if counts[k]
    }
    listed = dict(
        re.findall(r'<tr class="share" data-class="([^"]*)" data-share="([0-9.]+)"', page)
    )
    assert listed == expected
    assert '<table id="result">' in page and '<img id="drawn"' in page
