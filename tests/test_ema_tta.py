"""The weights' moving average (``Trainer(ema=…)``, ``--ema``), flip and flip-translate test-time
augmentation (``Classify(tta=…)``, ``--tta``) and validation every N epochs (``Trainer(val_every=…)``,
``--val-every``), issue 15.

References: the EMA recurrence e₁ = w₁, eₜ = d·eₜ₋₁ + (1 − d)·wₜ computed by hand from the weights
after each optimizer step (``torch.optim.swa_utils.get_ema_multi_avg_fn``'s definition), and the
mean of two softmaxes computed by hand, the six translated views cut by index lists (not by
``F.pad``); "bit identical" is against an uninterrupted run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.cli import CLIError
from cnnkit.cli._common import compare_resume_config
from cnnkit.data import TensorBatches
from cnnkit.tasks import get_task
from cnnkit.train import Callback, Trainer, read_checkpoint, rundir
from cnnkit.train.checkpoint import load_checkpoint, save_checkpoint

N, BATCH = 96, 32  # 3 steps an epoch


def net() -> nn.Module:
    """A CNN with BatchNorm (buffers to average) whose left and right differ (TTA matters)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(4),
        nn.Flatten(), nn.Linear(4 * 2 * 3, 5),
    )  # fmt: skip


def batches(shuffle: bool = True) -> TensorBatches:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, 8, 12), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 5, (N,), generator=g)
    return TensorBatches(images, labels, BATCH, shuffle=shuffle, seed=1, mean=(0.5,), std=(0.3,))


def trainer(out=None, **options) -> Trainer:
    options.setdefault("optimizer", "sgd")
    options.setdefault("lr", 0.05)
    return Trainer(net(), progress=False, device="cpu", out_dir=out, schedule="constant", **options)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and floating-point buffers (num_batches_tracked is a count, not averaged)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


# ---- EMA ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("every", [1, 2])
def test_ema_is_the_hand_computed_average_of_the_weights_after_each_update(every) -> None:
    run = trainer(ema=0.8, ema_every=every)
    seen: list[dict[str, torch.Tensor]] = []
    run.optimizer.register_step_post_hook(lambda *_: seen.append(_state(run.model)))
    run.fit(batches(), epochs=2)
    assert len(seen) == 6
    averaged = [w for step, w in enumerate(seen) if (step % 3 + 1) % every == 0]  # epoch steps 1..3
    expected = dict(averaged[0])
    for weights in averaged[1:]:
        expected = {k: 0.8 * expected[k] + 0.2 * weights[k] for k in expected}
    got = _state(run.ema.module)
    assert got.keys() == expected.keys() and any("running_var" in k for k in got)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-7, msg=key)
    assert int(run.ema.n_averaged) == len(averaged)
    assert not torch.equal(got["0.weight"], _state(run.model)["0.weight"])  # not the raw weights


def test_validation_and_predict_use_the_average() -> None:
    run = trainer(ema=0.8)
    run.fit(batches(), epochs=1)
    reference = net()
    reference.load_state_dict(run.ema.module.state_dict())
    reference.eval()
    x, y = next(iter(batches(shuffle=False)))
    with torch.no_grad():
        logits = reference(x)
    torch.testing.assert_close(run.predict(x), logits.softmax(1))
    scores = run.evaluate([(x, y)])
    assert scores["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


class StopAfterOne(Callback):
    def on_epoch_end(self, trainer, epoch, logs):
        trainer.stop_training = True


class KeepAverages(Callback):
    """The moving average's weights at each epoch's end (before best.safetensors is written)."""

    def __init__(self) -> None:
        self.averages: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, trainer, epoch, logs):
        self.averages.append(_state(trainer.ema.module))


def test_resume_with_ema_is_bit_identical_and_best_holds_the_average(tmp_path) -> None:
    kept = KeepAverages()
    straight = trainer(tmp_path / "a", ema=0.8, callbacks=[kept])
    straight.fit(batches(), batches(False), epochs=3)
    first = trainer(tmp_path / "b", ema=0.8, callbacks=[StopAfterOne()])
    first.fit(batches(), batches(False), epochs=3)
    assert first.epoch == 1
    resumed = trainer(tmp_path / "b", ema=0.8)
    resumed.fit(batches(), batches(False), epochs=3, resume=True)
    assert resumed.resumed_from == 1
    for a, b in ((straight.model, resumed.model), (straight.ema, resumed.ema)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), name
    drop = {"seconds", "images_per_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in straight.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in resumed.history
    ]
    # last: the raw weights under model/, the AveragedModel under ema/
    last, _ = read_checkpoint(tmp_path / "b" / rundir.LAST)
    assert torch.equal(last["model/0.weight"], resumed.model.state_dict()["0.weight"])
    assert torch.equal(last["ema/module.0.weight"], resumed.ema.module.state_dict()["0.weight"])
    assert int(last["ema/n_averaged"]) == 9
    # best: the average of its epoch as model/ (what evaluate, predict and export load)
    best, meta = read_checkpoint(tmp_path / "a" / rundir.BEST)
    assert not any(k.startswith("ema/") for k in best)
    epoch = int(meta["epoch"])
    scores = [(row["val_accuracy"], -row["val_loss"]) for row in straight.history]
    assert scores[epoch - 1] == max(scores)
    for key, value in kept.averages[epoch - 1].items():
        assert torch.equal(best[f"model/{key}"], value), key


def test_old_checkpoints_load_and_a_missing_average_is_named(tmp_path) -> None:
    model = net()
    save_checkpoint(tmp_path / "old.safetensors", model)  # as written before EMA existed
    fresh = net()
    load_checkpoint(tmp_path / "old.safetensors", fresh)
    run = trainer(ema=0.9)
    with pytest.raises(ValueError, match=r"old\.safetensors: holds no moving average"):
        load_checkpoint(tmp_path / "old.safetensors", run.model, ema=run.ema)


def test_ema_decay_must_be_between_0_and_1() -> None:
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="ema: expected a decay between 0 and 1"):
            trainer(ema=bad)


# ---- flip TTA -------------------------------------------------------------------------------------
def test_flip_tta_output_is_the_mean_of_the_two_softmaxes() -> None:
    model = net().eval()
    task = get_task("classify", tta="flip")
    x = torch.randn(6, 1, 8, 12)
    with torch.no_grad():
        expected = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
        output = task.infer(model, x)
    torch.testing.assert_close(task.decode(output), expected)
    assert not torch.allclose(expected, model(x).softmax(1).detach(), atol=1e-3)
    # through the trainer: predictions and the loss (-log of the averaged probability)
    run = Trainer(model, task=task, progress=False, device="cpu")
    torch.testing.assert_close(run.predict(x), expected)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    loss = -expected[torch.arange(6), y].log().mean().item()
    assert run.evaluate([(x, y)])["loss"] == pytest.approx(loss, rel=1e-5)
    assert task.options()["tta"] == "flip" and "tta" not in get_task("classify").options()


def _edge_shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved by (dy, dx) pixels, the uncovered edge repeating the border pixels, by index
    lists: output pixel (i, j) is input (i - dy, j - dx), the indices clamped to the image."""
    h, w = x.shape[-2:]
    rows, cols = (torch.arange(h) - dy).clamp(0, h - 1), (torch.arange(w) - dx).clamp(0, w - 1)
    return x.index_select(-2, rows).index_select(-1, cols)


def test_flip_translate_tta_is_airbenchs_weighted_mean_of_six_softmaxes() -> None:
    model = net().eval()
    task = get_task("classify", tta="flip-translate")
    x = torch.randn(6, 1, 8, 12)

    def p(v: torch.Tensor) -> torch.Tensor:
        return (model(v).softmax(1) + model(v.flip(3)).softmax(1)) / 2

    with torch.no_grad():
        # half on the image and its mirror, a quarter each on both moved 1 px down-right and up-left
        expected = p(x) / 2 + p(_edge_shifted(x, 1, 1)) / 4 + p(_edge_shifted(x, -1, -1)) / 4
        output = task.infer(model, x)
        flip_only = get_task("classify", tta="flip").infer(model, x).softmax(1)
        # channels-last input (what the trainer feeds) gives the same answer
        wide = nn.Sequential(nn.Conv2d(3, 1, 1), model).eval()
        x3 = torch.randn(6, 3, 8, 12)
        last = task.infer(wide, x3.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(task.decode(output), expected)
    assert not torch.allclose(expected, flip_only, atol=1e-3)  # the shifted views count
    torch.testing.assert_close(last, task.infer(wide, x3))
    assert _edge_shifted(torch.arange(4.0).view(1, 1, 1, 4), 0, 1).flatten().tolist() == [
        0.0, 0.0, 1.0, 2.0,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="images of 1x12 pixels are too small to shift by 1"):
        task.infer(model, torch.randn(2, 1, 1, 12))


def test_tta_choices_are_checked_and_the_cli_offers_the_tasks() -> None:
    from cnnkit.cli import _common
    from cnnkit.models import create_model
    from cnnkit.tasks.classify import TTA_CHOICES

    assert _common.TTA_BY_TASK["classify"] == TTA_CHOICES
    with pytest.raises(ValueError, match="tta: expected one of flip, flip-translate"):
        get_task("classify", tta="rotate")
    # LeNet-5's RBF outputs are distances, not logits: averaging their softmax means nothing
    with pytest.raises(ValueError, match="tta: LeNet5 has its own criterion"):
        get_task("classify", tta="flip").setup(create_model("lenet5"))


# ---- the command line ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flip", "batch_augment", "warned"),
    [
        (False, None, True),
        (False, "crop=2", True),
        (True, None, False),
        (False, "crop=2,flip", False),
    ],
)
@pytest.mark.parametrize("tta", ["flip", "flip-translate"])
def test_flip_tta_without_flipped_training_images_is_warned(
    capsys, flip, batch_augment, warned, tta
):
    import argparse

    from cnnkit.cli._common import task_from_args

    args = argparse.Namespace(
        task="classify", task_option=[], label_smoothing=0.0, tta=tta, flip=flip,
        batch_augment=batch_augment,
    )  # fmt: skip
    assert task_from_args(args).tta == tta
    assert (
        f"--tta {tta}, but training never mirrors an image" in capsys.readouterr().err
    ) == warned


def test_resume_refuses_to_add_ema_tta_or_batch_augmentation_naming_each() -> None:
    old = {
        "data": {"name": "fashion-mnist", "flip": False},
        "task": {"name": "classify", "options": {"label_smoothing": 0.0}},
        "trainer": {"optimizer": "adamw", "epochs": 2},
    }
    new = {
        "data": {"name": "fashion-mnist", "flip": False, "batch_augment": "crop=2,flip"},
        "task": {"name": "classify", "options": {"label_smoothing": 0.0, "tta": "flip"}},
        "trainer": {"optimizer": "adamw", "epochs": 2, "ema": 0.99, "ema_every": 1},
    }
    with pytest.raises(CLIError) as error:
        compare_resume_config(old, new, "run/config.json")
    message = str(error.value)
    assert all(option in message for option in ("--batch-augment", "--tta", "--ema"))
    assert "--optimizer" not in message
    assert compare_resume_config(old, old, "run/config.json") == (old, [])


# ---- validation every N epochs ------------------------------------------------------------------
def _validated_epochs(history: list[dict]) -> list[int]:
    return [row["epoch"] for row in history if "val_accuracy" in row]


@pytest.mark.parametrize(("every", "validated"), [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]), (0, [5])])
def test_val_every_validates_every_nth_epoch_and_the_last(tmp_path, every, validated) -> None:
    run = trainer(tmp_path / "run", val_every=every)
    history = run.fit(batches(), batches(shuffle=False), epochs=5)
    assert _validated_epochs(history) == validated
    assert all("accuracy" in row and "loss" in row for row in history)  # training metrics: all
    # best.safetensors comes from a validated epoch, never from a training accuracy
    _, metadata = read_checkpoint(tmp_path / "run" / rundir.BEST)
    best = max(history, key=lambda row: row.get("val_accuracy", -1.0))
    assert int(metadata["epoch"]) in validated
    assert int(metadata["epoch"]) == best["epoch"]
    config = rundir.RunDir(tmp_path / "run").read_config()
    assert config["trainer"].get("val_every") == (None if every == 1 else every)


def test_val_every_validates_the_epoch_the_time_budget_ends() -> None:
    run = trainer(val_every=0, time_budget=1e-6)
    history = run.fit(batches(), batches(shuffle=False), epochs=50)
    assert len(history) == 1 and _validated_epochs(history) == [1]
    assert "time budget" in (run.stop_reason or "")


def test_early_stopping_waits_only_on_validated_epochs() -> None:
    from cnnkit.train import EarlyStopping

    stopper = EarlyStopping(patience=1, restore_best=False)
    run = trainer(val_every=3, callbacks=[stopper], lr=0.0)  # no learning: never improves
    history = run.fit(batches(), batches(shuffle=False), epochs=12)
    # epoch 3 sets the best, epoch 6 does not beat it: stop there (epochs 4, 5 are no verdict)
    assert _validated_epochs(history) == [3, 6] and len(history) == 6
    with pytest.raises(ValueError, match="val_every: expected a number of epochs >= 0, got -1"):
        trainer(val_every=-1)


def test_early_stopping_on_a_misspelt_metric_still_fails_on_a_validated_epoch() -> None:
    from cnnkit.train import EarlyStopping

    run = trainer(val_every=2, callbacks=[EarlyStopping(monitor="val_acuracy")])
    with pytest.raises(KeyError, match="monitor 'val_acuracy' is not in the epoch's metrics"):
        run.fit(batches(), batches(shuffle=False), epochs=4)
    assert len(run.history) == 2  # epoch 1 (not validated) passed, epoch 2 (validated) failed


def test_the_history_figure_draws_validation_where_it_ran() -> None:
    from cnnkit.viz.training import history_figure

    run = trainer(val_every=2)
    history = run.fit(batches(), batches(shuffle=False), epochs=3)
    lines = {
        line.get_label(): line for ax in history_figure(history).axes for line in ax.get_lines()
    }
    assert list(lines["val_accuracy"].get_xdata()) == [2, 3]
    assert list(lines["train_accuracy"].get_xdata()) == [1, 2, 3]
    assert list(lines["val_loss"].get_xdata()) == [2, 3]


def test_the_cli_takes_val_every_and_resume_refuses_to_change_it(tmp_path) -> None:
    import argparse

    from cnnkit.cli._common import add_training_arguments

    p = argparse.ArgumentParser()
    add_training_arguments(p)
    assert p.parse_args(["--model", "m", "--val-every", "0"]).val_every == 0
    assert p.parse_args(["--model", "m"]).val_every == 1
    with pytest.raises(SystemExit):
        p.parse_args(["--model", "m", "--val-every", "-1"])
    old = {"trainer": {"optimizer": "sgd", "epochs": 2}}
    new = {"trainer": {"optimizer": "sgd", "epochs": 2, "val_every": 0}}
    with pytest.raises(CLIError, match="--val-every"):
        compare_resume_config(old, new, "run/config.json")
