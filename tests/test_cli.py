"""The `cnnkit` command line: train → evaluate → predict on real data, and its error messages."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from quick_data import fashion_mnist_cut

from cnnkit.cli import main
from cnnkit.train import rundir


@pytest.fixture(scope="module", autouse=True)
def _quick_fashion_mnist(fashion_mnist):
    """This module's runs validate on 1,000 images and test on 2,000 (the real ones, cut as
    conftest's ``quick_fashion_mnist``; module-wide, for the module's trained run)."""
    with fashion_mnist_cut(fashion_mnist) as small:
        yield small


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "small"
    code = main(
        ["train", "--model", "fashion_cnn", "--epochs", "2", "--train-limit", "2048",
         "--batch-size", "64", "--lr", "3e-3", "--model-option", "dropout=0.0",
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    return out


def test_train_writes_the_whole_run_directory(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert names >= {
        rundir.CONFIG, rundir.METRICS, rundir.BEST, rundir.LAST,
        rundir.HISTORY_PLOT, rundir.CONFUSION_PLOT, rundir.PREDICTIONS_PLOT, "test_metrics.json",
    }  # fmt: skip
    config = json.loads((trained_run / rundir.CONFIG).read_text())
    assert config["model"] == {
        "name": "fashion_cnn", "num_classes": 10, "in_channels": 1, "options": {"dropout": 0.0}
    }  # fmt: skip
    assert config["data"]["input_size"] == [1, 28, 28]
    assert config["data"]["mean"][0] == pytest.approx(0.2860, abs=1e-3)  # Fashion-MNIST's mean
    test = json.loads((trained_run / "test_metrics.json").read_text())
    assert 0.5 < test["test_accuracy"] <= 1.0  # 2,048 images, two epochs: far above chance (10%)


def test_evaluate_prints_loss_accuracy_and_a_class_table(trained_run, capsys):
    assert main(["evaluate", str(trained_run)]) == 0
    out = capsys.readouterr().out
    expected = json.loads((trained_run / "test_metrics.json").read_text())["test_accuracy"]
    assert f"accuracy  {expected:.2%}" in out
    assert "Ankle boot" in out and "2000 images" in out  # the test split (cut to 2,000 here)


def _confident_test_image(run, fashion_mnist) -> tuple[int, torch.Tensor, float]:
    """The first test image the run's model classifies right with over 90% probability (its index,
    its pixels, that probability), computed in memory with the training normalization."""
    from cnnkit.cli._common import load_run

    _, _, model, _, meta = load_run(run)
    _, _, (x_test, y_test) = fashion_mnist
    x = (x_test[:100].float().unsqueeze(1) / 255 - meta.mean[0]) / meta.std[0]
    with torch.no_grad():
        probs = model(x).softmax(1)
    best, preds = probs.max(1)
    index = next(i for i in range(100) if preds[i] == y_test[i] and best[i] > 0.9)
    return index, x_test[index], best[index].item()


def test_predict_prints_the_class_the_model_gives_in_memory(
    trained_run, fashion_mnist, tmp_path, capsys
):
    """The command's preprocessing is the run's own: an exact 28x28 test image gets the class and
    probability that the model gives it in memory."""
    from cnnkit.data import FASHION_MNIST_CLASSES

    index, pixels, probability = _confident_test_image(trained_run, fashion_mnist)
    label = int(fashion_mnist[2][1][index])
    path = tmp_path / "item.png"
    Image.fromarray(pixels.numpy()).save(path)
    assert main(["predict", str(trained_run), str(path), "--top", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [str(path), f"  {FASHION_MNIST_CLASSES[label]:<14s} {probability:7.2%}"]


def test_predict_reports_bad_files_one_by_one(trained_run, fashion_mnist, tmp_path, capsys):
    index, pixels, _ = _confident_test_image(trained_run, fashion_mnist)
    good = tmp_path / "item.png"
    Image.fromarray(pixels.numpy()).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    code = main(["predict", str(trained_run), str(bad), str(good), str(tmp_path / "missing.png")])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.splitlines()[0] == str(
        good
    )  # the good image after the bad one is predicted
    assert f"error: {bad}: not a decodable image" in captured.err
    assert f"error: {tmp_path / 'missing.png'}: no such file" in captured.err


def test_an_existing_run_is_never_overwritten_by_accident(trained_run, capsys):
    before = (trained_run / rundir.BEST).read_bytes()
    code = main(["train", "--model", "fashion_cnn", "--epochs", "1", "--out", str(trained_run)])
    assert code == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (trained_run / rundir.BEST).read_bytes() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--model", "resnet9000", "--out", "x"], "unknown model 'resnet9000'; choose one of:"),
        (["train", "--model", "fashion_cnn", "--data", "cifar", "--out", "x"], "--data 'cifar': does not exist; expected one of the datasets fashion-mnist"),
        (["train", "--model", "fashion_cnn", "--batch-size", "big", "--out", "x"], "--batch-size: expected a positive integer or 'auto'"),
        (["train", "--model", "fashion_cnn", "--model-option", "depth", "--out", "x"], "--model-option: expected KEY=VALUE"),
        (["evaluate", "no/such/run"], "no/such/run/config.json: not found"),
    ],
)  # fmt: skip
def test_errors_name_the_option_and_the_valid_choices(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_choice_options_are_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "fashion_cnn", "--optimizer", "lamb", "--out", "x"])
    assert info.value.code == 2
    err = capsys.readouterr().err.replace("'", "")  # Python 3.11 quotes the choices, 3.12 does not
    assert "invalid choice: lamb (choose from sgd, adam, adamw, nadam, rmsprop)" in err


def test_the_predicted_class_of_a_clear_training_image(trained_run, fashion_mnist):
    from cnnkit.cli._common import load_run

    _, _, model, _, meta = load_run(trained_run)
    (x_train, y_train), _, _ = fashion_mnist
    x = (x_train[:200].float().unsqueeze(1) / 255 - meta.mean[0]) / meta.std[0]
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y_train[:200]).float().mean().item()
    assert accuracy > 0.5


def test_help_imports_neither_torch_nor_matplotlib():
    """`cnnkit --help` is instant: no command module, so no torch (1.2 s to import here)."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom cnnkit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'matplotlib', 'torchvision') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "train a model on a dataset into a run directory" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_without_out_a_run_gets_a_fresh_numbered_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--model", "fashion_cnn", "--epochs", "1", "--train-limit", "64"]
    argv += ["--batch-size", "64", "--no-progress"]
    assert main(argv) == 0 and main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        "-> runs/classify/fashion_cnn-1" in printed and "-> runs/classify/fashion_cnn-2" in printed
    )
    assert (tmp_path / "runs/classify/fashion_cnn-2" / rundir.BEST).is_file()


def test_one_epoch_history_plot_draws_the_loss_per_step(trained_run):
    from cnnkit.train import RunDir
    from cnnkit.viz.training import history_figure

    run = RunDir(trained_run)
    steps = run.read_steps()
    # 2,048 images at batch 64: 32 steps an epoch, logged every 10 steps and at each epoch's end
    assert [round(row["epoch"], 4) for row in steps] == [
        round(e + s / 32, 4) for e in range(2) for s in (10, 20, 30, 32)
    ]
    fig = history_figure(run.read_metrics()[:1], steps=steps[:4])
    loss_ax = fig.axes[0]
    train_line = loss_ax.get_lines()[0]
    assert len(train_line.get_xdata()) == 4 and loss_ax.get_xlim()[0] == 0


def test_models_lists_every_task_and_filters_by_task(capsys):
    assert main(["models"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["alexnet"] == "classify" and rows["fcn8s"] == "segment" and rows["yolo"] == "detect"
    assert rows["localizer"] == "localize"
    assert main(["models", "--task", "segment"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert names == ["deeplab", "fcn16s", "fcn32s", "fcn8s", "unet"]
