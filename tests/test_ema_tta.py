"""The weights' moving average (``Trainer(ema=…)``, ``--ema``) and flip test-time augmentation
(``Classify(tta="flip")``, ``--tta flip``), issue 15.

References: the EMA recurrence e₁ = w₁, eₜ = d·eₜ₋₁ + (1 − d)·wₜ computed by hand from the weights
after each optimizer step (``torch.optim.swa_utils.get_ema_multi_avg_fn``'s definition), and the
mean of two softmaxes computed by hand; "bit identical" is against an uninterrupted run."""

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


def test_tta_choices_are_checked_and_the_cli_offers_the_tasks() -> None:
    from cnnkit.cli import _common
    from cnnkit.models import create_model
    from cnnkit.tasks.classify import TTA_CHOICES

    assert _common.TTA_CHOICES == TTA_CHOICES
    with pytest.raises(ValueError, match="tta: expected one of flip"):
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
def test_flip_tta_without_flipped_training_images_is_warned(capsys, flip, batch_augment, warned):
    import argparse

    from cnnkit.cli._common import task_from_args

    args = argparse.Namespace(
        task="classify", task_option=[], label_smoothing=0.0, tta="flip", flip=flip,
        batch_augment=batch_augment,
    )  # fmt: skip
    assert task_from_args(args).tta == "flip"
    assert ("never mirrors an image" in capsys.readouterr().err) == warned


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
