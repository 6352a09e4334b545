"""Using a run outside training (issue 16): TensorBoard events read back, ONNX export from the CLI
with its metadata, ``cnnkit predict --onnx`` printing what the PyTorch path prints, and the
self-contained HTML report. One small run (``deploy_runs``) serves all."""

from __future__ import annotations

import io
import json

import pytest
import torch
from deploy_runs import CLASSES, EPOCHS, PER_CLASS, make_fashion_folder, train_small_run
from PIL import Image

from cnnkit.cli import main
from cnnkit.train import rundir


@pytest.fixture(scope="module")
def folder(fashion_mnist, tmp_path_factory):
    return make_fashion_folder(tmp_path_factory.mktemp("fashion"), fashion_mnist)


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    return train_small_run(folder, tmp_path_factory.mktemp("runs") / "small", "--tensorboard")


@pytest.fixture(scope="module")
def events(run):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    acc = event_accumulator.EventAccumulator(
        str(run / "tensorboard"),
        size_guidance={event_accumulator.IMAGES: 0, event_accumulator.HISTOGRAMS: 0},
    )
    return acc.Reload()


# ---- TensorBoard -------------------------------------------------------------------------------


def test_tensorboard_scalars_are_the_epoch_rows_of_metrics_jsonl(run, events):
    """Each epoch's loss, accuracy (training and validation) and learning rate, at steps 1..EPOCHS,
    equal metrics.jsonl's rows (the trainer's own record)."""
    rows = [json.loads(line) for line in (run / rundir.METRICS).read_text().splitlines()]
    for key, tag in [("loss", "loss/train"), ("val_loss", "loss/val"),
                     ("accuracy", "accuracy/train"), ("val_accuracy", "accuracy/val"),
                     ("lr", "lr")]:  # fmt: skip
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == list(range(1, EPOCHS + 1)), tag
        assert [e.value for e in logged] == pytest.approx([r[key] for r in rows], rel=1e-6), tag


def test_tensorboard_has_a_weight_histogram_per_parameter_per_epoch(run, events):
    from cnnkit.cli._common import load_run

    _, _, model, _, _ = load_run(run)
    tags = events.Tags()["histograms"]
    assert set(tags) == {f"weights/{name}" for name, _ in model.named_parameters()}
    assert [e.step for e in events.Histograms(tags[0])] == list(range(1, EPOCHS + 1))


def test_tensorboard_has_prediction_images_and_the_graph(events):
    images = events.Images("predictions")
    assert [e.step for e in images] == list(range(1, EPOCHS + 1))
    grid = Image.open(io.BytesIO(images[0].encoded_image_string))
    # 8 validation images of 28 × 28, each enlarged 4 × (legible labels), in one TensorBoard grid
    assert (images[0].width, images[0].height) == grid.size and grid.size[1] >= 112
    assert events.Graph() is not None


# ---- ONNX from the command line ----------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="the optional extra 'onnx' is not installed")
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", str(run), "--onnx", str(path), "--dynamic-batch"]) == 0
    return path


def test_export_records_the_runs_preprocessing_in_the_metadata(run, exported):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    data = json.loads((run / rundir.CONFIG).read_text())["data"]
    assert props["cnnkit.task"] == "classify"
    assert props["cnnkit.input_layout"] == "NCHW"
    assert json.loads(props["cnnkit.input_size"]) == [3, 28, 28]
    assert json.loads(props["cnnkit.mean"]) == data["mean"]
    assert json.loads(props["cnnkit.std"]) == data["std"]
    assert props["cnnkit.resize"] == "center-crop"  # image files' policy (DataMeta)
    assert float(props["cnnkit.crop_pct"]) == data["crop_pct"]
    assert json.loads(props["cnnkit.class_names"]) == sorted(CLASSES.values())
    assert json.loads(props["cnnkit.outputs"]) == ["logits"]


def test_a_dynamic_batch_export_takes_any_batch_size(run, exported):
    from cnnkit.cli._common import load_run
    from cnnkit.deploy.onnx import OnnxModel

    _, _, model, _, _ = load_run(run)
    x = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        expected = model(x)
    got = OnnxModel(exported, threads=1)(x)
    assert got.shape == (3, len(CLASSES))
    assert (got - expected).abs().max() <= 1e-4


def test_predict_onnx_prints_what_the_pytorch_path_prints(run, exported, folder, capsys):
    paths = [str(folder / name / "000.png") for name in CLASSES.values()][:3]
    assert main(["predict", str(run), *paths, "--top", "3"]) == 0
    pytorch = capsys.readouterr().out
    assert main(["predict", "--onnx", str(exported), *paths, "--top", "3"]) == 0
    assert capsys.readouterr().out == pytorch
    assert pytorch.count("%") == 9  # three classes for each of three images


def test_predict_onnx_rejects_a_file_that_is_not_a_cnnkit_export(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    assert main(["predict", "--onnx", str(path), "x.png"]) == 2
    assert f"{path}: not a loadable ONNX model" in capsys.readouterr().err


# ---- the HTML report ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(run):
    assert main(["report", str(run)]) == 0
    return (run / "report.html").read_text()


def test_report_needs_no_network(report):
    assert "http" not in report  # no external URL: no script, style sheet or image to fetch
    assert "<script" not in report


def test_report_holds_the_runs_test_accuracy_and_tables(run, report):
    accuracy = json.loads((run / rundir.TEST_METRICS).read_text())["test_accuracy"]
    assert f"<td>test_accuracy</td><td>{accuracy:.2%}</td>" in report
    assert "per-class accuracy" in report and "confusion matrix" in report
    for name in CLASSES.values():
        assert f"<td>{name}</td>" in report


def test_report_confusion_matrix_counts_every_test_image(run, report):
    """The matrix's cells sum to the test split's size: 10% of 160 images, stratified (16)."""
    import re

    table = report.split("confusion matrix")[1].split("</table>")[0]
    cells = [int(v) for v in re.findall(r"<td>(\d+)</td>", table)]
    assert len(cells) == len(CLASSES) ** 2
    assert sum(cells) == PER_CLASS * len(CLASSES) // 10


def test_report_images_decode(report):
    import base64
    import re

    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', report)
    assert len(uris) >= 5  # curves, predictions, the image, three layers of feature maps
    for data in uris:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()  # the whole PNG decodes
        assert image.size[0] > 0


def test_export_names_the_checkpoints_as_the_run_directory_does():
    from cnnkit.cli import export

    assert (export.BEST, export.LAST) == (rundir.BEST, rundir.LAST)


def test_a_task_without_a_view_is_shown_through_its_format_prediction():
    """The other tasks plug in before they register a view: the default view shows the lines of
    Task.format_prediction, draws nothing, and names the single ONNX output 'output'."""
    from cnnkit.deploy.views import TaskView, get_view

    class Lines:
        def format_prediction(self, decoded, class_names, top):
            return [f"{class_names[0]} at {decoded}"]

    view = get_view("a-task-with-no-view")
    assert type(view) is TaskView and view.output_names == ("output",)
    assert view.result_html(7, ["cat"], Lines()) == '<pre id="result">cat at 7</pre>'
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    assert view.draw(images, None, ["cat"]) is images
