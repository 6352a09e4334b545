"""``cnnkit speedrun`` (issue 15): a tiny run on real Fashion-MNIST images writes its report with
the right keys and values, trained with the recipe's batch augmentation, EMA and flip TTA."""

from __future__ import annotations

import argparse
import json

import pytest
from quick_data import fashion_mnist_cut

from cnnkit.cli import main, speedrun
from cnnkit.train import RunDir, rundir


@pytest.fixture
def small_fashion_mnist(fashion_mnist):
    """Fashion-MNIST cut to 256 / 200 / 300 images (the loader's own output, sliced)."""
    with fashion_mnist_cut(fashion_mnist, train=256, valid=200, test=300) as small:
        yield small


def test_a_tiny_speedrun_reports_time_epochs_accuracy_and_the_target(
    small_fashion_mnist, tmp_path, capsys
) -> None:
    out = tmp_path / "speed"
    argv = ["speedrun", "fashion-mnist", "--target", "0.3", "--epochs", "2", "--batch-size", "64",
            "--model-option", "widths=[4,8,8]", "--lr", "0.2", "--out", str(out), "--no-progress",
            "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / rundir.SPEEDRUN).read_text())
    assert set(report) == {
        "dataset", "model", "seed", "target", "test_accuracy", "target_met", "epochs",
        "train_seconds", "wall_seconds", "val_accuracy", "val_target_epoch",
        "val_target_train_seconds", "precision", "run",
    }  # fmt: skip
    test = json.loads((out / rundir.TEST_METRICS).read_text())
    history = RunDir(out).read_metrics()
    # `--epochs N` alone: N epochs, without the recipe's 9-minute clock
    assert RunDir(out).read_config()["trainer"]["time_budget_s"] is None
    assert report["test_accuracy"] == test["test_accuracy"]
    assert report["target_met"] == (test["test_accuracy"] >= 0.3)
    assert report["epochs"] == 2 and report["seed"] == 3 and report["model"] == "speednet"
    # validated once, after the last epoch (the recipe's val_every 0)
    assert report["val_accuracy"] == [None, history[1]["val_accuracy"]]
    assert report["val_target_epoch"] in (None, 2)
    assert report["train_seconds"] == pytest.approx(sum(row["seconds"] for row in history))
    assert report["wall_seconds"] > report["train_seconds"] > 0
    assert f"test accuracy {test['test_accuracy']:.2%} (target 30.00%:" in printed
    # the recipe, recorded where --resume checks it; the test set was scored once, at the end
    config = RunDir(out).read_config()
    assert config["data"]["batch_augment"] == speedrun.RECIPE["batch_augment"] == "crop=1,flip"
    assert config["task"]["options"]["tta"] == "flip-translate"
    assert config["trainer"]["val_every"] == 0
    assert config["trainer"]["ema"] == 0.9873 and config["trainer"]["optimizer"] == "sgd"
    assert config["trainer"]["batch_size"] == 64 and config["speedrun"] == {
        "dataset": "fashion-mnist"
    }
    # the recipe's whitening stem, from the training images' patch covariance, recorded so that
    # `evaluate` and `predict` rebuild the same filters; --model-option added to the recipe's
    options = config["model"]["options"]
    assert set(options) == {"widths", "whiten", "activation", "patch_covariance"}
    assert options["widths"] == [4, 8, 8] and options["whiten"] is True
    assert options["activation"] == "relu"
    from cnnkit.data import load_dataset, patch_covariance

    (train_images, _), _, _ = small_fashion_mnist
    meta = load_dataset("fashion-mnist").meta  # mean/std from the same 256 training images
    want = patch_covariance(train_images[:, None], meta).flatten().tolist()
    assert options["patch_covariance"] == pytest.approx(want, abs=1e-7)
    # the run loads back (the filters are a buffer in the checkpoint), the recorded figures' own
    import torch

    from cnnkit.cli._common import load_run
    from cnnkit.models.speednet import whitening_filters

    model = load_run(out, fuse=True)[2]
    recorded = torch.tensor(options["patch_covariance"], dtype=torch.float64).view(4, 4)
    torch.testing.assert_close(model.stem.weight, whitening_filters(recorded, 1))
    assert config["task"]["options"]["label_smoothing"] == speedrun.RECIPE["label_smoothing"]


def test_speedrun_takes_only_its_datasets_and_a_sensible_target(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["speedrun", "cifar10"])
    assert "invalid choice: 'cifar10'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["speedrun", "fashion-mnist", "--target", "94"])
    assert "expected an accuracy in (0, 1]" in capsys.readouterr().err


def test_the_benchmark_times_92_percent_from_the_first_epoch_that_reaches_it() -> None:
    import importlib
    import sys
    from pathlib import Path

    benchmarks = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, benchmarks)
    try:
        bench = importlib.import_module("time_to_accuracy")
    finally:
        sys.path.remove(benchmarks)
    rows = [
        {"seconds": 30.0, "images": 600, "test_accuracy": 0.90},
        {"seconds": 20.0, "images": 600, "test_accuracy": 0.921},
        {"seconds": 24.0, "images": 600, "test_accuracy": 0.93},
    ]
    summary = bench.summarize_epochs(rows)
    # the first epoch (tracing, warm-up) is left out of the seconds per epoch: median(20, 24)
    assert summary["seconds_per_epoch"] == 22.0 and summary["images_per_s"] == 600 / 22.0
    assert summary["seconds_to_92"] == 50.0 and summary["final_test_accuracy"] == 0.93
    assert bench.summarize_epochs(rows[:1])["seconds_to_92"] is None
    assert bench.extra_speedrun_args(["0.95=--epochs 30 --lr 0.5"]) == {
        0.95: ["--epochs", "30", "--lr", "0.5"]
    }
    # the ratios: Keras' time to 92% over cnnkit's; a lower bound where Keras never reached 92%
    keras_rows = [
        {"seconds": 300.0, "test_accuracy": 0.90},
        {"seconds": 340.0, "test_accuracy": 0.91},
    ]
    results = {
        "notes_model": {
            "keras-book": {"seconds_per_epoch": 340.0, "seconds_to_92": None, "epochs": keras_rows},
            "cnnkit-book": {"seconds_per_epoch": 200.0},
            "cnnkit-best": {"seconds_to_92": 160.0},
        },
        "speedrun": {"0.94": {"seconds_to_92": 128.0}, "0.92": {"seconds_to_92": None}},
    }
    assert bench.ratios(results) == {
        "cnnkit-book speed / Keras (s per epoch)": "1.70x",
        "time to 92%: Keras book / cnnkit best recipe": "> 4.00x",  # 640 s and still short
        "time to 92%: Keras book / speedrun 0.94": "> 5.00x",
    }
    results["notes_model"]["keras-book"]["seconds_to_92"] = 480.0
    assert bench.ratios(results)["time to 92%: Keras book / speedrun 0.94"] == "3.75x"
    del results["notes_model"]["keras-book"]
    assert bench.ratios(results) == {}


def test_speednet_activation_is_gelu_or_relu_everywhere() -> None:
    from torch import nn

    from cnnkit.models import create_model

    def activations(model: nn.Module) -> set[type]:
        return {type(m) for m in model.modules() if isinstance(m, (nn.GELU, nn.ReLU))}

    assert activations(create_model("speednet", stem_width=8)) == {nn.GELU}
    relu = create_model("speednet", stem_width=8, activation="relu")
    assert activations(relu) == {nn.ReLU}
    assert sum(p.numel() for p in relu.parameters()) == sum(
        p.numel() for p in create_model("speednet", stem_width=8).parameters()
    )
    with pytest.raises(ValueError, match="activation='tanh'; expected one of gelu, relu"):
        create_model("speednet", activation="tanh")


def recipe(*argv: str) -> argparse.Namespace:
    """`cnnkit speedrun fashion-mnist ARGV`'s options once the recipe is applied."""
    parser = argparse.ArgumentParser()
    speedrun.register(parser)
    args = parser.parse_args(["fashion-mnist", *argv])
    speedrun.apply_recipe(args)
    return args


def test_the_recipe_trains_on_a_clock_that_leaves_room_for_the_report() -> None:
    args = recipe()
    assert args.time_budget == 540.0 and args.epochs == 100 and args.batch_augment == "crop=1,flip"
    assert args.tta == "flip-translate" and args.val_every == 0
    assert args.model_option == ["whiten=true", "activation=relu"]
    assert recipe("--time-budget", "2m").time_budget == 120.0
    assert recipe("--epochs", "3").time_budget is None  # N epochs, no clock


def test_a_target_above_94_percent_takes_the_30_minute_recipe_unless_told_otherwise() -> None:
    args = recipe("--target", "0.95")
    assert args.time_budget == 1720.0
    assert args.model_option == ["whiten=true", "activation=relu", "widths=[48,96,192]"]
    assert recipe("--target", "0.941").time_budget == 1720.0
    assert recipe("--target", "0.94").time_budget == 540.0
    assert recipe("--target", "0.5").time_budget == 540.0
    # the user's clock, epochs and widths win; other model options keep the wider groups
    assert recipe("--target", "0.95", "--time-budget", "10m").time_budget == 600.0
    assert recipe("--target", "0.95", "--epochs", "5").time_budget is None
    narrow = recipe("--target", "0.95", "--model-option", "widths=[32,64,128]").model_option
    assert narrow == ["whiten=true", "activation=relu", "widths=[32,64,128]"]
    residual = recipe("--target", "0.95", "--model-option", "residual=true").model_option
    assert residual == ["whiten=true", "activation=relu", "widths=[48,96,192]", "residual=true"]
    # another model gets none of speednet's options
    assert recipe("--target", "0.95", "--model", "fashion_cnn").model_option == []


def test_speednet_ceil_mode_keeps_the_last_odd_row_and_column() -> None:
    import torch

    from cnnkit.models import create_model

    x = torch.randn(2, 1, 28, 28)
    floor = create_model("speednet", features_only=True)(x)
    ceil = create_model("speednet", features_only=True, ceil_mode=True)(x)
    assert [tuple(m.shape[1:]) for m in floor] == [(32, 14, 14), (64, 7, 7), (128, 3, 3)]
    assert [tuple(m.shape[1:]) for m in ceil] == [(32, 14, 14), (64, 7, 7), (128, 4, 4)]
    assert create_model("speednet", ceil_mode=True)(x).shape == (2, 10)


def test_speednet_residual_adds_a_third_conv_and_the_pooled_map_back() -> None:
    import torch
    import torch.nn.functional as F

    from cnnkit.models import create_model

    plain, residual = create_model("speednet"), create_model("speednet", residual=True)
    added = sum(9 * c * c + 2 * c for c in (32, 64, 128))  # a 3x3 conv without bias, and its BN
    assert sum(p.numel() for p in residual.parameters()) == 288_160 + added == 482_144
    group = residual.groups[1].eval()
    x = torch.randn(2, 32, 14, 14)

    def bn(t: torch.Tensor, norm: torch.nn.BatchNorm2d) -> torch.Tensor:
        return F.batch_norm(
            t, norm.running_mean, norm.running_var, norm.weight, norm.bias, eps=norm.eps
        )

    pooled = F.gelu(bn(F.max_pool2d(F.conv2d(x, group.conv1.weight, padding=1), 2), group.norm1))
    y = F.gelu(bn(F.conv2d(pooled, group.conv2.weight, padding=1), group.norm2))
    want = pooled + F.gelu(bn(F.conv2d(y, group.conv3.weight, padding=1), group.norm3))
    torch.testing.assert_close(group(x), want)
    assert residual(torch.randn(2, 1, 28, 28)).shape == plain(torch.randn(2, 1, 28, 28)).shape


def test_patch_covariance_is_the_covariance_of_every_2x2_patch() -> None:
    import numpy as np
    import torch

    from cnnkit.data import patch_covariance
    from cnnkit.data.datasets import DataMeta

    images = torch.randint(
        0, 256, (5, 2, 6, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    meta = DataMeta("t", (2, 6, 7), ("a", "b"), mean=(0.5, 0.25), std=(0.2, 0.4))
    x = (images.double() / 255 - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor(
        [0.2, 0.4], dtype=torch.float64
    ).view(1, 2, 1, 1)
    # every stride-1 2x2 patch by hand, flattened channel, row, column (a Conv2d weight's order)
    patches = [
        x[n, :, i : i + 2, j : j + 2].flatten().numpy()
        for n in range(5) for i in range(5) for j in range(6)
    ]  # fmt: skip
    want = np.cov(np.stack(patches), rowvar=False, bias=True)
    got = patch_covariance(images, meta)
    assert got.shape == (8, 8)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    # a list of images goes through meta.preprocess, the same figures
    np.testing.assert_allclose(patch_covariance(list(images), meta).numpy(), want, atol=1e-6)


def test_speednet_whitening_decorrelates_the_patches_it_was_built_from() -> None:
    import torch
    import torch.nn.functional as F

    from cnnkit.data import patch_covariance
    from cnnkit.data.datasets import DataMeta
    from cnnkit.models import create_model

    g = torch.Generator().manual_seed(1)
    # correlated pixels: a smooth field plus noise, as photos and Fashion-MNIST are
    smooth = F.interpolate(torch.rand(64, 1, 8, 8, generator=g), size=(28, 28), mode="bilinear")
    images = ((smooth * 0.8 + 0.2 * torch.rand(64, 1, 28, 28, generator=g)) * 255).to(torch.uint8)
    meta = DataMeta("t", (1, 28, 28), tuple("abcdefghij"), mean=(0.5,), std=(0.25,))
    covariance = patch_covariance(images, meta)
    model = create_model(
        "speednet", whiten=True, patch_covariance=covariance.flatten().tolist()
    ).eval()
    x = (images.float() / 255 - 0.5) / 0.25
    out = model.stem(x)  # N x 8 x 27 x 27: four whitened directions and their negatives
    assert out.shape == (64, 8, 27, 27)
    torch.testing.assert_close(out[:, 4:], -out[:, :4])
    features = out[:, :4].permute(0, 2, 3, 1).reshape(-1, 4).double()
    eigenvalues = torch.linalg.eigvalsh(covariance)
    # unit variance, no correlation (up to airbench's eps of 5e-4 added to each eigenvalue)
    want = torch.diag(eigenvalues / (eigenvalues + 5e-4))
    torch.testing.assert_close(torch.cov(features.T, correction=0), want, atol=1e-4, rtol=1e-4)
    # the filters are a buffer: neither trained nor counted; the first conv takes 8 channels
    assert "stem.weight" in model.state_dict()
    assert all(not name.startswith("stem") for name, _ in model.named_parameters())
    assert sum(p.numel() for p in model.parameters()) == 288_160 + 9 * 32 * 7 == 290_176
    assert model(x[:2]).shape == (2, 10)
    assert [tuple(m.shape[1:]) for m in create_model(
        "speednet", whiten=True, patch_covariance=covariance.flatten().tolist(), features_only=True
    )(x[:2])] == [(32, 13, 13), (64, 6, 6), (128, 3, 3)]  # fmt: skip


def test_speednet_whitening_without_its_covariance_or_too_small_an_image_is_an_error() -> None:
    import torch

    from cnnkit.models import create_model

    with pytest.raises(ValueError, match="whiten=True needs patch_covariance"):
        create_model("speednet", whiten=True)
    with pytest.raises(ValueError, match="two different stems"):
        create_model("speednet", whiten=True, stem_width=8, patch_covariance=[1.0] * 16)
    with pytest.raises(ValueError, match="patch_covariance has 9 values; expected 16"):
        create_model("speednet", whiten=True, patch_covariance=[1.0] * 9)
    model = create_model(
        "speednet", whiten=True, patch_covariance=torch.eye(4).flatten().tolist()
    ).eval()
    assert model(torch.randn(1, 1, 9, 9)).shape == (1, 10)  # 9 -> 8 -> 4 -> 2 -> 1
    with pytest.raises(ValueError, match="at least 9x9, got 8x8"):
        model(torch.randn(1, 1, 8, 8))
