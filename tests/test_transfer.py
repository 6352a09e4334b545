"""Transfer learning: freeze / unfreeze, the two fine-tuning phases, and ``cnnkit finetune``.

Reference behaviour: Keras' transfer-learning guide (keras.io, "Transfer learning & fine-tuning"):
a frozen base neither learns nor updates its BatchNorm moving statistics, even while the model
trains; after unfreezing, everything trains.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_folder import make_folder

from cnnkit.cli import main
from cnnkit.data import TensorBatches
from cnnkit.models import create_model
from cnnkit.train import Callback, Trainer
from cnnkit.train.freeze import fine_tune, freeze, trainable_parameters, unfreeze


def small_lite0() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("efficientnet_lite0", num_classes=3)


def batches(n: int = 8) -> TensorBatches:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 3
    return TensorBatches(images, labels, batch_size=8, shuffle=True, mean=(0.5,), std=(0.25,))


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_one_epoch(model: torch.nn.Module) -> None:
    Trainer(model, lr=1e-2, progress=False, device="cpu").fit(batches(), epochs=1)


def test_freeze_leaves_only_the_classifier_trainable():
    model = small_lite0()
    frozen = freeze(model, until="fc")
    assert "stem.conv.weight" in frozen and "head.bn.bias" in frozen
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    assert trainable_parameters(model) == 1280 * 3 + 3


def test_freeze_until_a_block_keeps_later_blocks_trainable():
    model = small_lite0()
    freeze(model, until="blocks.15")
    assert not model.blocks[14].project.conv.weight.requires_grad
    assert model.blocks[15].project.conv.weight.requires_grad
    assert model.head.conv.weight.requires_grad


def test_freeze_names_the_modules_when_until_is_unknown():
    with pytest.raises(ValueError, match=r"no module 'classifier'.*'stem', 'blocks'"):
        freeze(small_lite0(), until="classifier")


def test_frozen_phase_leaves_base_weights_and_bn_statistics_bit_identical():
    model = small_lite0()
    before = snapshot(model)
    freeze(model, until="fc")
    train_one_epoch(model)
    after = model.state_dict()
    base = [k for k in before if not k.startswith("fc.")]
    assert any("running_var" in k for k in base) and any("num_batches_tracked" in k for k in base)
    assert all(torch.equal(before[k], after[k]) for k in base)
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


def test_frozen_bn_stays_in_inference_mode_under_model_train():
    model = small_lite0()
    freeze(model, until="fc")
    model.train()
    model(torch.randn(2, 3, 32, 32))
    assert not model.stem.bn.training and model.dropout.training


def test_unfrozen_phase_changes_base_weights_and_bn_statistics():
    model = small_lite0()
    freeze(model, until="fc")
    unfreeze(model)
    before = snapshot(model)
    train_one_epoch(model)
    after = model.state_dict()
    for key in ["stem.conv.weight", "stem.bn.running_mean", "blocks.7.dw.bn.running_var"]:
        assert not torch.equal(before[key], after[key]), key


def test_unfreeze_without_bn_stats_trains_weights_but_keeps_statistics():
    model = small_lite0()
    freeze(model, until="fc")
    unfreeze(model, bn_stats=False)
    before = snapshot(model)
    train_one_epoch(model)
    after = model.state_dict()
    assert not torch.equal(before["stem.conv.weight"], after["stem.conv.weight"])
    assert not torch.equal(before["stem.bn.weight"], after["stem.bn.weight"])  # scale trains
    stats = [k for k in before if "running_" in k or "num_batches_tracked" in k]
    assert len(stats) > 100 and all(torch.equal(before[k], after[k]) for k in stats)
    unfreeze(model)  # and bn_stats=True lets them follow model.train() again
    model.train()
    assert model.stem.bn.training


def test_fine_tune_keeps_the_best_epoch_of_either_phase(tmp_path):
    """Phase 2 starts from a wrecked head and learns nothing (tiny learning rate): the best weights,
    from phase 1, must come back, in the model and in best.safetensors."""
    from cnnkit.train.callbacks import Callback
    from cnnkit.train.checkpoint import load_checkpoint

    class WreckPhase2(Callback):
        calls = 0

        def on_train_begin(self, trainer):
            self.calls += 1
            if self.calls == 2:
                with torch.no_grad():
                    trainer.model.fc.weight.zero_()
                    trainer.model.fc.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))

    model = small_lite0()
    valid = batches(8)  # the training images: phase 1 can fit them
    history = fine_tune(
        model,
        batches(),
        valid,
        frozen_epochs=4,
        epochs=6,
        lr=3e-2,
        lr_factor=1e-12,
        patience=None,
        out_dir=tmp_path / "run",
        progress=False,
        device="cpu",
        callbacks=[WreckPhase2()],
    )
    scores = [row["val_accuracy"] for row in history]
    assert scores[4:] == [2 / 8, 2 / 8]  # every image called class 2
    assert max(scores[:4]) > 2 / 8
    trainer = Trainer(model, progress=False, device="cpu")
    assert trainer.evaluate(valid)["accuracy"] == max(scores[:4])
    reloaded = small_lite0()
    load_checkpoint(tmp_path / "run" / "best.safetensors", reloaded)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key


def test_fine_tune_runs_both_phases_into_one_run_directory(tmp_path):
    model = small_lite0()
    history = fine_tune(
        model,
        batches(),
        batches(4),
        frozen_epochs=1,
        epochs=2,
        lr=1e-2,
        out_dir=tmp_path / "run",
        progress=False,
        device="cpu",
    )
    assert [(row["phase"], row["epoch"]) for row in history] == [(1, 1), (2, 2)]
    assert history[1]["lr"] <= history[0]["lr"]  # phase 2 runs at a tenth of the learning rate
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["phase"] for line in metrics] == [1, 2]
    assert (tmp_path / "run" / "best.safetensors").is_file()
    assert all(p.requires_grad for p in model.parameters())


def test_cli_finetune_then_predict_with_the_run(tmp_path, capsys):
    data = make_folder(tmp_path / "colours", per_class=10)
    out = tmp_path / "runs" / "colours"
    argv = ["finetune", "--model", "efficientnet_lite0", "--data", str(data), "--out", str(out)]
    argv += ["--frozen-epochs", "8", "--epochs", "9", "--image-size", "32", "--batch-size", "6"]
    argv += ["--lr", "3e-2"]
    argv += ["--workers", "0", "--no-progress", "--device", "cpu", "--crop-scale", "0.8,1"]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["finetune"]["crop_scale"] == [0.8, 1.0]
    assert config["finetune"]["bn_stats"] is False
    assert config["data"]["class_names"] == ["blue", "green", "red"]
    assert config["model"] == {
        "name": "efficientnet_lite0",
        "num_classes": 3,
        "in_channels": 3,
        "options": {},
    }
    assert "test_accuracy" in json.loads((out / "test_metrics.json").read_text())
    capsys.readouterr()
    # A pure colour is told apart after nine epochs: the top class of each is its own.
    for colour in ("blue", "green", "red"):
        assert main(["predict", str(out), str(data / colour / "000.png"), "--top", "1"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].endswith("000.png") and lines[1].split()[0] == colour
    # evaluate rebuilds the run's own data (the folder's test split, RGB, 32 px, centre crop)
    assert main(["evaluate", str(out), "--workers", "0", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    expected = json.loads((out / "test_metrics.json").read_text())["test_accuracy"]
    assert f"accuracy  {expected:.2%}" in printed and "3 images" in printed


@pytest.mark.parametrize("text", ["0.5", "a,b", "0.9,0.5", "0,1"])
def test_cli_finetune_names_a_bad_crop_scale(tmp_path, capsys, text):
    data = make_folder(tmp_path / "colours", per_class=4)
    argv = ["finetune", "--model", "efficientnet_lite0", "--data", str(data)]
    argv += ["--out", str(tmp_path / "run"), "--crop-scale", text, "--workers", "0"]
    assert main(argv) == 2
    assert "--crop-scale" in capsys.readouterr().err


class _InterruptAt(Callback):
    """Ctrl-C at the end of epoch ``epoch`` (1-based)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("stop_after", [1, 3])
def test_fine_tune_resumes_in_either_phase_to_the_uninterrupted_weights(tmp_path, stop_after):
    """Interrupted in phase 1 (after epoch 1) or in phase 2 (after epoch 3), ``resume=True`` ends
    with the weights of an uninterrupted run, bit for bit."""
    options = dict(frozen_epochs=2, epochs=4, lr=1e-2, patience=None, progress=False, device="cpu")
    straight = small_lite0()
    fine_tune(straight, batches(), batches(4), out_dir=tmp_path / "a", **options)
    interrupted = small_lite0()
    with pytest.raises(KeyboardInterrupt):
        fine_tune(
            interrupted, batches(), batches(4), out_dir=tmp_path / "b",
            callbacks=[_InterruptAt(stop_after)], **options,
        )  # fmt: skip
    resumed = small_lite0()
    history = fine_tune(
        resumed, batches(), batches(4), out_dir=tmp_path / "b", resume=True, **options
    )
    assert [(row["phase"], row["epoch"]) for row in history] == [(1, 1), (1, 2), (2, 3), (2, 4)]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_cli_finetune_takes_fashion_mnist_and_train_takes_a_folder(
    tmp_path, capsys, quick_fashion_mnist
):
    """One data path: a pretrained RGB model fine-tunes on grey Fashion-MNIST (turned RGB and resized
    per batch), and a model trains from scratch on a folder of images."""
    out = tmp_path / "lite0-fashion"
    argv = [
        "finetune",
        "--model",
        "efficientnet_lite0",
        "--data",
        "fashion-mnist",
        "--out",
        str(out),
    ]
    argv += ["--frozen-epochs", "1", "--epochs", "1", "--image-size", "32", "--train-limit", "64"]
    argv += ["--no-progress", "--device", "cpu", "--batch-size", "32"]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["input_size"] == [3, 32, 32] and config["data"]["name"] == "fashion-mnist"
    assert json.loads((out / "test_metrics.json").read_text())["per_class_accuracy"].keys() == {
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
        "Ankle boot",
    }  # fmt: skip

    data = make_folder(tmp_path / "colours", per_class=10)
    out = tmp_path / "scratch-colours"
    argv = ["train", "--model", "fashion_cnn", "--data", str(data), "--image-size", "28"]
    argv += ["--epochs", "3", "--batch-size", "8", "--workers", "0", "--out", str(out)]
    argv += ["--no-progress", "--device", "cpu", "--model-option", "dropout=0.0"]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["in_channels"] == 3 and config["data"]["resize"] == "center-crop"
    assert config["data"]["class_names"] == ["blue", "green", "red"]
