"""The Trainer: a real short run whose loss falls, exact resume, checkpoints, NaN and Ctrl-C handling,
optimizers and schedules by name, callbacks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from cnnkit.data import TensorBatches
from cnnkit.train import (
    Callback,
    EarlyStopping,
    LambdaCallback,
    NonFiniteLossError,
    Trainer,
    make_optimizer,
    make_schedule,
    read_checkpoint,
    rundir,
)

MEAN, STD = (0.286,), (0.353,)


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Dropout(0.1),
        nn.Linear(8 * 7 * 7, 10),
    )  # fmt: skip


@pytest.fixture(scope="module")
def small_data(fashion_mnist):
    (xt, yt), (xv, yv), _ = fashion_mnist
    return (xt[:2048], yt[:2048]), (xv[:512], yv[:512])


def batches(split, shuffle=True, batch_size=64):
    return TensorBatches(*split, batch_size, shuffle=shuffle, mean=MEAN, std=STD)


def test_a_short_real_run_lowers_the_loss_and_learns(small_data):
    train, valid = small_data
    trainer = Trainer(tiny_cnn(), lr=3e-3, progress=False)
    before = trainer.evaluate(batches(valid, shuffle=False))
    history = trainer.fit(batches(train), batches(valid, shuffle=False), epochs=3)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"] < before["loss"]
    assert history[-1]["val_loss"] < before["loss"]
    # Ten balanced classes: chance is 10%; a small CNN on 2,048 real images reaches well above it.
    assert history[-1]["val_accuracy"] > 0.6
    assert set(history[-1]) >= {"loss", "accuracy", "val_loss", "val_accuracy", "val_top5", "lr"}


def test_resume_reproduces_an_uninterrupted_run_exactly(small_data, tmp_path):
    train, valid = small_data
    straight = Trainer(tiny_cnn(), progress=False, out_dir=tmp_path / "a")
    straight.fit(batches(train), batches(valid, False), epochs=2)

    class StopAfterOne(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            trainer.stop_training = True

    first = Trainer(tiny_cnn(), progress=False, out_dir=tmp_path / "b", callbacks=[StopAfterOne()])
    first.fit(batches(train), batches(valid, False), epochs=2)
    assert first.epoch == 1
    resumed = Trainer(tiny_cnn(), progress=False, out_dir=tmp_path / "b")
    history = resumed.fit(batches(train), batches(valid, False), epochs=2, resume=True)

    assert [row["epoch"] for row in history] == [1, 2]
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    state_a, state_b = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    for index in state_a["state"]:
        for key, value in state_a["state"][index].items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(state_b["state"][index][key])
            )
    assert straight.scheduler.get_last_lr() == resumed.scheduler.get_last_lr()
    lines = (tmp_path / "b" / rundir.METRICS).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_run_directory_files_and_refusal_to_overwrite(small_data, tmp_path):
    train, valid = small_data
    trainer = Trainer(
        tiny_cnn(), progress=False, out_dir=tmp_path, config={"model": {"name": "tiny"}}
    )
    trainer.fit(batches(train), batches(valid, False), epochs=1)
    assert {p.name for p in tmp_path.iterdir()} == {
        rundir.CONFIG,
        rundir.METRICS,
        rundir.STEPS,
        rundir.BEST,
        rundir.LAST,
    }
    config = json.loads((tmp_path / rundir.CONFIG).read_text())
    assert config["model"] == {"name": "tiny"}
    assert config["trainer"]["optimizer"] == "adamw" and config["trainer"]["epochs"] == 1
    tensors, meta = read_checkpoint(tmp_path / rundir.LAST)
    assert meta["epoch"] == "1"
    assert any(k.startswith("optimizer/") for k in tensors)
    with pytest.raises(FileExistsError, match="already holds a run; pass --resume"):
        Trainer(tiny_cnn(), progress=False, out_dir=tmp_path).fit(batches(train), epochs=1)


class _Exploding(nn.Module):
    """Returns NaN logits from the second training batch on."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_cnn()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = self.inner(x)
        return out * math.nan if self.training and self.calls > 40 else out


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(small_data, tmp_path):
    train, _ = small_data
    trainer = Trainer(_Exploding(), progress=False, out_dir=tmp_path, log_every=5)
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 2"):
        trainer.fit(batches(train), epochs=3)  # 32 batches per epoch: NaN from batch 9 of epoch 2
    tensors, meta = read_checkpoint(tmp_path / rundir.LAST)
    assert meta["epoch"] == "1"
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model/"))


def test_ctrl_c_keeps_the_last_finished_epochs_checkpoint_and_the_run_resumes(small_data, tmp_path):
    """Ctrl-C saves nothing: last.safetensors stays the start of the unfinished epoch (the
    trainer's docstring says why), which --resume redoes."""
    train, _ = small_data

    class Interrupt(Callback):
        def on_epoch_begin(self, trainer, epoch):
            if epoch == 1:
                raise KeyboardInterrupt

    trainer = Trainer(tiny_cnn(), progress=False, out_dir=tmp_path, callbacks=[Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(batches(train), epochs=3)
    _, meta = read_checkpoint(tmp_path / rundir.LAST)
    assert meta["epoch"] == "1" and trainer.checkpoint_epoch == 1
    assert json.loads(meta["extra"]) == {"planned_epochs": 3, "start_epoch": 0}
    resumed = Trainer(tiny_cnn(), progress=False, out_dir=tmp_path)
    # Resumed with a shorter plan: the schedule is re-planned and advanced past epoch 1.
    assert len(resumed.fit(batches(train), epochs=2, resume=True)) == 2
    assert resumed.resumed_from == 1
    assert resumed.scheduler.last_epoch == 2 * len(batches(train))


def test_early_stopping_stops_after_patience_epochs_without_improvement(small_data):
    train, valid = small_data
    seen = []
    trainer = Trainer(
        tiny_cnn(),
        lr=1e-9,  # nothing is learnt, so val_loss cannot improve by min_delta
        schedule="constant",
        progress=False,
        callbacks=[
            EarlyStopping(patience=2, min_delta=0.1),
            LambdaCallback(lambda t, e, logs: seen.append(e)),
        ],
    )
    history = trainer.fit(batches(train), batches(valid, False), epochs=10)
    assert len(history) == 3 and seen == [0, 1, 2]
    assert "did not improve for 2 epochs" in trainer.stop_reason


def test_optimizer_defaults_by_name():
    params = [nn.Parameter(torch.zeros(2))]
    sgd = make_optimizer("sgd", params)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    assert isinstance(make_optimizer("nadam", params), torch.optim.NAdam)
    assert (
        make_optimizer("adamw", params, lr=0.5, weight_decay=None).defaults["weight_decay"] == 0.01
    )
    with pytest.raises(
        ValueError,
        match="unknown optimizer 'lamb'; choose one of: sgd, adam, adamw, nadam, rmsprop",
    ):
        make_optimizer("lamb", params)


def _lrs(name, total=100, per_epoch=10):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = make_schedule(name, opt, total_steps=total, steps_per_epoch=per_epoch, step_epochs=3)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return lrs


def test_schedules_follow_their_definitions():
    step = _lrs("step")
    assert step[29] == 1.0 and step[30] == pytest.approx(0.1) and step[60] == pytest.approx(0.01)
    cosine = _lrs("cosine")
    assert cosine[0] == 1.0 and cosine[50] == pytest.approx(0.5) and cosine[99] < 0.001
    onecycle = _lrs("onecycle")
    peak = max(range(100), key=onecycle.__getitem__)
    assert 20 <= peak <= 30 and onecycle[peak] == pytest.approx(1.0, rel=1e-3)
    assert onecycle[0] == pytest.approx(1.0 / 25) and onecycle[-1] < 1e-3
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        _lrs("linear")


def test_auxiliary_outputs_add_weighted_losses():
    class WithAux(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            out = self.fc(x.flatten(1))
            return (out, out * 2) if self.training else out

    trainer = Trainer(WithAux(), progress=False)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    main = nn.functional.cross_entropy(trainer.model(x)[0], y)
    aux = nn.functional.cross_entropy(trainer.model(x)[1], y)
    # Szegedy et al. 2014 weight the auxiliary classifiers' losses by 0.3
    loss, parts = trainer.task.loss(trainer.model(x), y)
    assert loss.item() == pytest.approx(main.item() + 0.3 * aux.item(), rel=1e-6)
    assert set(parts) == {"classification", "aux1"}


def test_predict_returns_probabilities_for_a_tensor(small_data):
    trainer = Trainer(tiny_cnn(), progress=False)
    probs = trainer.predict(torch.randn(300, 1, 28, 28), batch_size=128)
    assert probs.shape == (300, 10)
    assert torch.allclose(probs.sum(1), torch.ones(300), atol=1e-5)


def test_history_plot_says_when_the_training_loss_is_label_smoothed():
    """With label smoothing the training loss is not comparable with the plain validation loss
    (0.63 vs 0.25 in the resnet18_small run): the legend says which is which."""
    from cnnkit.viz.training import history_figure

    history = [{"epoch": 1, "loss": 0.9, "val_loss": 0.4, "accuracy": 0.8, "val_accuracy": 0.85}]
    labels = [line.get_label() for line in history_figure(history, 0.1).axes[0].get_lines()]
    assert labels == ["train_loss (label smoothing 0.1)", "val_loss"]
    labels = [line.get_label() for line in history_figure(history).axes[0].get_lines()]
    assert labels == ["train_loss", "val_loss"]
