"""Issue 14, the training loop's side: no lost work and no dead ends.

The reference for every "bit for bit" is an uninterrupted run of the same settings in the same
process (CPU, fixed seeds): interrupted and resumed, a run must end with exactly its weights,
optimizer state, schedule and metrics.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from safetensors import SafetensorError
from torch import nn

from cnnkit.cli import CLIError, main
from cnnkit.cli._common import compare_resume_config
from cnnkit.data import TensorBatches
from cnnkit.train import NonFiniteLossError, RunDir, Trainer, read_checkpoint, rundir
from cnnkit.train.checkpoint import DiskFullError

N, BATCH = 256, 32  # 8 steps an epoch
TIMING = {"seconds", "images_per_s"}


def batches() -> TensorBatches:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (N,), generator=g)
    return TensorBatches(images, labels, BATCH, shuffle=True, seed=1, mean=(0.5,), std=(0.3,))


class Net(nn.Module):
    """A small CNN with dropout (so the dropout RNG matters), and a fault to inject at the
    ``fault_at``-th training forward: ``"interrupt"`` (Ctrl-C), ``"nan"`` (NaN logits) or
    ``"inf_grad"`` (finite logits whose gradient is infinite)."""

    def __init__(self, fault: str | None = None, fault_at: int = 0, once: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
            nn.Dropout(0.3), nn.Linear(4 * 7 * 7, 10),
        )  # fmt: skip
        self.fault, self.fault_at, self.once, self.calls = fault, fault_at, once, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if not self.training or self.fault is None:
            return out
        self.calls += 1
        hit = self.calls == self.fault_at if self.once else self.calls >= self.fault_at
        if hit and self.fault == "interrupt":
            raise KeyboardInterrupt
        if hit and self.fault == "nan":
            return out * math.nan
        if hit and self.fault == "inf_grad":
            return _InfGrad.apply(out)
        return out


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.inf


def trainer(out=None, model: nn.Module | None = None, **options) -> Trainer:
    return Trainer(model or Net(), progress=False, out_dir=out, device="cpu", **options)


def assert_same_run(a: Trainer, b: Trainer) -> None:
    """Weights, optimizer state, schedule position and metrics (less timings) all equal."""
    for (name, x), y in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name
    state_a, state_b = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for index, values in state_a.items():
        for key, value in values.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b[index][key]))
    assert a.scheduler.state_dict()["last_epoch"] == b.scheduler.state_dict()["last_epoch"]
    assert a.scheduler.get_last_lr() == b.scheduler.get_last_lr()
    strip = [{k: v for k, v in row.items() if k not in TIMING} for row in a.history]
    assert strip == [{k: v for k, v in row.items() if k not in TIMING} for row in b.history]
    assert a.steps == b.steps


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Trainer:
    """The reference: three uninterrupted epochs."""
    run = trainer(tmp_path_factory.mktemp("straight"))
    run.fit(batches(), batches(), epochs=3)
    return run


# ---- Ctrl-C and SIGKILL ------------------------------------------------------------------------


def test_ctrl_c_mid_epoch_then_resume_equals_an_uninterrupted_run_bit_for_bit(straight, tmp_path):
    """Ctrl-C at epoch 2, step 4 (the 12th training step); before the fix the handler saved the
    mid-epoch weights as 'one epoch done', and the resumed run redid epoch 2 from them."""
    first = trainer(tmp_path, Net("interrupt", fault_at=12))
    with pytest.raises(KeyboardInterrupt):
        first.fit(batches(), batches(), epochs=3)
    _, meta = read_checkpoint(tmp_path / rundir.LAST)
    assert meta["epoch"] == "1"  # the start of the unfinished epoch
    resumed = trainer(tmp_path)
    resumed.fit(batches(), batches(), epochs=3, resume=True)
    assert resumed.resumed_from == 1
    assert_same_run(straight, resumed)
    rows = RunDir(tmp_path).read_metrics()
    assert [row["epoch"] for row in rows] == [1, 2, 3]


def test_a_second_interrupt_and_resume_still_finishes_exactly(straight, tmp_path):
    """Two Ctrl-Cs (epoch 1 step 8, then epoch 3 step 1 of the resumed run) and two resumes."""
    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path, Net("interrupt", fault_at=8)).fit(batches(), batches(), epochs=3)
    assert RunDir(tmp_path).has_checkpoint() is False  # epoch 1 never finished
    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path, Net("interrupt", fault_at=17)).fit(
            batches(), batches(), epochs=3, resume=True
        )
    resumed = trainer(tmp_path)
    resumed.fit(batches(), batches(), epochs=3, resume=True)
    assert resumed.resumed_from == 2
    assert_same_run(straight, resumed)


def test_a_dataloader_with_its_own_generator_resumes_exactly(tmp_path):
    """Image files train through a DataLoader with a seeded ``generator`` (``data.folder.loader``);
    before the fix it advanced across epochs, so a run resumed at epoch 2 shuffled as epoch 1."""
    from torch.utils.data import DataLoader, TensorDataset

    def loader() -> DataLoader:
        g = torch.Generator().manual_seed(0)
        dataset = TensorDataset(torch.randn(N, 1, 28, 28, generator=g), torch.randint(0, 10, (N,)))
        return DataLoader(dataset, BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))

    straight = trainer(tmp_path / "a")
    straight.fit(loader(), epochs=3)
    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path / "b", Net("interrupt", fault_at=12)).fit(loader(), epochs=3)
    resumed = trainer(tmp_path / "b")
    resumed.fit(loader(), epochs=3, resume=True)
    assert_same_run(straight, resumed)


class _Jittered(torch.utils.data.Dataset):
    """Random augmentation inside the DataLoader's workers: noise from the worker's own RNG."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(N, 1, 28, 28, generator=g)
        self.y = torch.randint(0, 10, (N,), generator=g)

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i] + 0.1 * torch.rand(1, 28, 28), self.y[i]


def test_worker_processes_with_random_augmentation_resume_exactly(tmp_path):
    """cnnkit.data.folder.loader with 2 workers: the workers are started each epoch from the
    loader's generator (reseeded by the trainer), so the noise they draw repeats on --resume."""
    from cnnkit.data.folder import loader

    def make():
        return loader(_Jittered(), BATCH, shuffle=True, workers=2, prefetch=2, seed=0)

    straight = trainer(tmp_path / "a")
    straight.fit(make(), epochs=2)
    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path / "b", Net("interrupt", fault_at=12)).fit(make(), epochs=2)
    resumed = trainer(tmp_path / "b")
    resumed.fit(make(), epochs=2, resume=True)
    assert_same_run(straight, resumed)


def test_early_stopping_resumes_with_the_epochs_it_had_waited(tmp_path):
    """lr 1e-9: nothing is learnt, so val_loss never improves by 0.5 after epoch 1 and patience 2
    stops an uninterrupted run after epoch 3. Interrupted in epoch 3, the resumed run must stop
    there too (before the fix its counter restarted at 0, and it ran to epoch 5)."""
    from cnnkit.train import EarlyStopping

    def stopper():
        return EarlyStopping(patience=2, min_delta=0.5)

    options = dict(lr=1e-9, schedule="constant")
    straight = trainer(tmp_path / "a", callbacks=[stopper()], **options)
    assert len(straight.fit(batches(), batches(), epochs=6)) == 3
    with pytest.raises(KeyboardInterrupt):
        trainer(
            tmp_path / "b", Net("interrupt", fault_at=19), callbacks=[stopper()], **options
        ).fit(batches(), batches(), epochs=6)
    resumed = trainer(tmp_path / "b", callbacks=[stopper()], **options)
    assert len(resumed.fit(batches(), batches(), epochs=6, resume=True)) == 3
    assert "did not improve for 2 epochs" in resumed.stop_reason


def test_resume_of_a_run_killed_in_its_first_epoch_starts_from_the_beginning(straight, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path, Net("interrupt", fault_at=3)).fit(batches(), batches(), epochs=3)
    assert RunDir(tmp_path).results() == [rundir.CONFIG]  # what SIGKILL leaves, too
    resumed = trainer(tmp_path)
    resumed.fit(batches(), batches(), epochs=3, resume=True)
    assert resumed.resumed_from is None
    assert_same_run(straight, resumed)


def test_stale_temporaries_are_removed_when_a_run_resumes_and_never_listed(tmp_path):
    run = trainer(tmp_path)
    run.fit(batches(), epochs=1)
    stale = [tmp_path / ".last.safetensors.k2j4x9.tmp", tmp_path / ".history.png.a8b7.tmp"]
    for path in stale:
        path.write_bytes(b"")  # SIGKILL during a write leaves such a file, often empty
    assert RunDir(tmp_path).temporaries() == sorted(stale)
    assert not any(name.endswith(".tmp") for name in RunDir(tmp_path).results())
    trainer(tmp_path).fit(batches(), epochs=2, resume=True)
    assert not any(path.exists() for path in stale)


def test_same_seed_and_settings_give_bit_identical_weights_on_cpu():
    a, b = trainer(), trainer()
    a.fit(batches(), epochs=2)
    b.fit(batches(), epochs=2)
    assert_same_run(a, b)


# ---- a full disk -------------------------------------------------------------------------------

ENOSPC_ERRORS = [
    OSError(errno.ENOSPC, "No space left on device"),
    # what safetensors 0.8's Rust writer raises on a full disk
    SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
]


@pytest.mark.parametrize("error", ENOSPC_ERRORS, ids=["OSError", "SafetensorError"])
def test_a_full_disk_names_the_file_and_the_space_and_keeps_the_checkpoints(
    error, tmp_path, monkeypatch
):
    import cnnkit.train.checkpoint as checkpoint

    trainer(tmp_path).fit(batches(), epochs=1)
    before = {name: (tmp_path / name).read_bytes() for name in (rundir.LAST, rundir.BEST)}
    size = len(before[rundir.LAST])

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 100)  # part of the file made it to the disk
        raise error

    monkeypatch.setattr(checkpoint, "save_file", full)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: SimpleNamespace(free=250_000))
    with pytest.raises(DiskFullError) as info:
        trainer(tmp_path).fit(batches(), epochs=2, resume=True)
    message = str(info.value)
    assert "\n" not in message and info.value.errno == errno.ENOSPC
    # random labels: epoch 2 does not beat epoch 1's accuracy, so last.safetensors is written first
    assert message.startswith(f"{tmp_path / rundir.LAST}: the disk is full: the checkpoint needs ")
    needed = float(re.search(r"needs ([\d.]+) MB", message).group(1))
    assert needed == pytest.approx(size / 1e6, abs=0.01)  # the file's size, as written before
    assert "and 0.25 MB are free on that disk: make room and continue with --resume" in message
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert RunDir(tmp_path).temporaries() == []


# ---- NaN and infinity --------------------------------------------------------------------------


def test_a_nan_loss_stops_at_the_step_it_appears_keeping_the_last_good_checkpoint(tmp_path):
    """NaN from the 11th training step (epoch 2, step 3); the loss is logged only every 100 steps,
    so before the fix it was seen at the epoch's last step, after 6 bad updates."""
    run = trainer(tmp_path, Net("nan", fault_at=11, once=False), log_every=100)
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 2, step 3;"):
        run.fit(batches(), epochs=3)
    tensors, meta = read_checkpoint(tmp_path / rundir.LAST)
    assert meta["epoch"] == "1"
    assert all(torch.isfinite(p).all() for p in run.model.parameters())  # no bad update made


def test_infinite_gradients_with_a_finite_loss_stop_too():
    """The logits' gradient is infinite at step 2; through the ReLU's zeros (inf × 0) the
    parameters' gradients hold NaN, so their norm is NaN."""
    run = trainer(model=Net("inf_grad", fault_at=2))
    with pytest.raises(NonFiniteLossError, match="gradients' norm became nan at epoch 1, step 2;"):
        run.fit(batches(), epochs=1)


def test_skip_drops_only_the_bad_batch_and_the_schedule_keeps_its_length():
    run = trainer(model=Net("nan", fault_at=3), on_nonfinite="skip")
    history = run.fit(batches(), epochs=2)
    assert [row["skipped_batches"] for row in history] == [1, 0]
    # 2 epochs of 8 steps, one skipped: AdamW stepped 15 times, the schedule 16
    steps = {int(s["step"]) for s in run.optimizer.state_dict()["state"].values()}
    assert steps == {15}
    assert run.scheduler.last_epoch == 16
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert all(math.isfinite(row["loss"]) for row in history)


def test_on_nonfinite_takes_stop_or_skip():
    with pytest.raises(ValueError, match="on_nonfinite: expected one of stop, skip, got 'ignore'"):
        trainer(on_nonfinite="ignore")


# ---- --resume with other settings ---------------------------------------------------------------


def _config(**trainer_changes):
    config = {
        "cnnkit_version": "0.1.0",
        "command": ["cnnkit", "train", "--model", "lenet5"],
        "model": {"name": "lenet5", "num_classes": 10, "in_channels": 1, "options": {}},
        "data": {"name": "fashion-mnist", "input_size": [1, 32, 32], "train_limit": 2048},
        "task": {"name": "classify", "options": {}},
        "trainer": {"optimizer": "adamw", "lr": 0.001, "schedule": "onecycle", "epochs": 3,
                    "batch_size": 64, "device": "cpu", "seed": 0, "on_nonfinite": "stop"},
    }  # fmt: skip
    config["trainer"].update(trainer_changes)
    return config


def test_resume_refuses_settings_that_change_the_run_naming_each_option():
    new = _config(lr=0.003, batch_size=32)
    new["data"]["train_limit"] = 1000
    new["model"]["options"] = {"dropout": 0.0}
    with pytest.raises(CLIError) as info:
        compare_resume_config(_config(), new, "run/config.json")
    message = str(info.value)
    assert message.startswith("run/config.json: --resume with settings that change the run: ")
    for part in (
        "--model-option (model.options.dropout 0.0 now, absent in the run)",
        "--train-limit (data.train_limit 1000 now, 2048 in the run)",
        "--lr (trainer.lr 0.003 now, 0.001 in the run)",
        "--batch-size (trainer.batch_size 32 now, 64 in the run)",
    ):
        assert part in message


def test_resume_refuses_fewer_epochs():
    with pytest.raises(CLIError, match=r"--epochs \(--epochs 2 \(the run has 3: a run is extended"):
        compare_resume_config(_config(), _config(epochs=2), "c.json")


def test_resume_with_more_epochs_is_recorded_and_its_schedule_explained():
    new = _config(epochs=5)
    new["command"] = ["cnnkit", "train", "--epochs", "5", "--resume"]
    merged, notes = compare_resume_config(_config(), new, "c.json")
    assert notes == [
        "--epochs 5 extends the run's 3 epochs: the onecycle schedule is re-planned over 5 "
        "epochs, and the epochs left follow the 5-epoch curve from the point the finished epochs "
        "reach on it (the learning rate jumps from the 3-epoch curve to it)"
    ]
    assert merged["trainer"]["epochs"] == 5
    assert merged["command"] == _config()["command"]  # the run's own command line stays
    assert merged["resumes"] == [{"command": new["command"], "changed": {"trainer.epochs": [3, 5]}}]


def test_resume_may_change_the_device_and_the_nonfinite_policy():
    merged, notes = compare_resume_config(
        _config(), _config(device="cuda:0", on_nonfinite="skip"), "c.json"
    )
    assert merged["trainer"]["device"] == "cuda:0"
    assert notes == [
        "--device: trainer.device was cpu, is now cuda:0 (recorded in config.json)",
        "--on-nonfinite: trainer.on_nonfinite was stop, is now skip (recorded in config.json)",
    ]
    same, notes = compare_resume_config(_config(), _config(), "c.json")
    assert same == _config() and notes == []


# ---- the command line ---------------------------------------------------------------------------


def image_folder(root):
    """Three classes of 20 grey 16x16 PNGs, each class a band of brightness."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(3):
        folder = root / f"c{label}"
        folder.mkdir(parents=True)
        for i in range(20):
            pixels = (rng.random((16, 16)) * 80 + label * 80).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def train_argv(data, out, *extra) -> list[str]:
    """A run of a few seconds: LeNet-5 on 60 images at 32x32."""
    return [
        "train", "--model", "lenet5", "--data", str(data), "--image-size", "32",
        "--batch-size", "8", "--workers", "0", "--device", "cpu", "--no-progress",
        "--epochs", "2", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def cli_run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(train_argv(folder, out)) == 0
    return out


def test_cli_resume_with_changed_settings_is_refused_and_config_json_kept(folder, cli_run, capsys):
    config = (cli_run / rundir.CONFIG).read_bytes()
    argv = train_argv(folder, cli_run, "--resume", "--lr", "0.01", "--train-limit", "30")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--resume with settings that change the run: " in err
    assert "--train-limit (data.train_limit 30 now, null in the run)" in err
    assert "--lr (trainer.lr 0.01 now, 0.001 in the run)" in err  # AdamW's default
    assert (cli_run / rundir.CONFIG).read_bytes() == config


def test_cli_resume_with_more_epochs_says_what_the_schedule_does(folder, cli_run, tmp_path, capsys):
    import shutil

    out = shutil.copytree(cli_run, tmp_path / "run")
    (out / ".last.safetensors.x1y2z3.tmp").write_bytes(b"")
    assert main(train_argv(folder, out, "--resume", "--epochs", "3")) == 0
    printed = capsys.readouterr().out
    assert "--epochs 3 extends the run's 2 epochs: the onecycle schedule is re-planned" in printed
    config = json.loads((out / rundir.CONFIG).read_text())
    assert config["trainer"]["epochs"] == 3
    assert config["resumes"][0]["changed"] == {"trainer.epochs": [2, 3]}
    assert "--resume" not in config["command"]  # the run's own command line
    results = next(line for line in printed.splitlines() if line.startswith("results in"))
    assert ".tmp" not in results and not (out / ".last.safetensors.x1y2z3.tmp").exists()
    assert [row["epoch"] for row in RunDir(out).read_metrics()] == [1, 2, 3]


def test_cli_resume_of_a_run_with_only_its_config_starts_over(folder, cli_run, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / rundir.CONFIG).write_bytes((cli_run / rundir.CONFIG).read_bytes())
    assert main(train_argv(folder, out)) == 2  # a plain re-run still refuses
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main(train_argv(folder, out, "--resume")) == 0
    assert f"--resume: {out} holds no checkpoint" in capsys.readouterr().out
    assert [row["epoch"] for row in RunDir(out).read_metrics()] == [1, 2]


def test_cli_full_disk_is_one_line_and_exit_1(folder, tmp_path, monkeypatch, capsys):
    import cnnkit.train.checkpoint as checkpoint

    def full(tensors, filename, metadata=None):
        raise ENOSPC_ERRORS[1]

    monkeypatch.setattr(checkpoint, "save_file", full)
    assert main(train_argv(folder, tmp_path / "run")) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        f"cnnkit train: error: {tmp_path / 'run' / rundir.BEST}: the disk is full"
    )


# ---- kill-safety ---------------------------------------------------------------------------------

KILL_EPOCHS = int(os.environ.get("CNNKIT_KILL_EPOCHS", "8"))  # 40 for the 20 kills
KILL_ARGS = ("--batch-size", "1")  # 45 steps an epoch: the epochs last about as long as the report
# ./run test makes one run of 5 kills, SIGKILL and SIGINT in turns of two, so that each signal lands
# in an epoch and in a checkpoint write and one of them in the report (a run per signal cost another
# 50 s). CNNKIT_KILLS=20 CNNKIT_KILL_EPOCHS=40 is the run (the README quotes it): one run per
# signal, 20 kills each. A quarter of the kills (at least one) land in the test report and its plots,
# the rest alternate between "somewhere in an epoch" and "while a checkpoint is being written".
KILLS = int(os.environ.get("CNNKIT_KILLS", "5"))
KILL_SIGNALS = (
    [(signal.SIGKILL,), (signal.SIGINT,)]
    if "CNNKIT_KILLS" in os.environ
    else [(signal.SIGKILL, signal.SIGINT)]
)


def kill_signals(signals: tuple[signal.Signals, ...], kills: int) -> list[signal.Signals]:
    """The signal of each kill, in order: ``signals`` in turns of two kills."""
    return [signals[(i // 2) % len(signals)] for i in range(kills)]


def kill_plan(kills: int) -> list[str]:
    """The moment of each kill, in order: ``epoch`` and ``write`` alternately while the run trains,
    then ``report``."""
    in_report = max(1, kills // 4)
    return [("epoch", "write")[i % 2] for i in range(kills - in_report)] + ["report"] * in_report


def _start(argv: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-u", "-m", "cnnkit", *argv]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def _wait_for_training(proc: subprocess.Popen) -> float:
    """Read the output up to the 'training ...' line; the moment training starts."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("training "):
            break
    return time.monotonic()


def _state(path) -> dict[str, torch.Tensor]:
    tensors, _ = read_checkpoint(path)
    return tensors


def _rows(out) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in RunDir(out).read_metrics()]


def _wait_until(proc: subprocess.Popen, condition, deadline: float, every: float = 0.0002) -> bool:
    """Poll ``condition()`` until it holds, the process ends or ``deadline``; whether it held."""
    held = False
    while proc.poll() is None and not (held := condition()) and time.monotonic() < deadline:
        time.sleep(every)
    return held


@pytest.fixture(scope="module")
def reference_run(folder, tmp_path_factory):
    """An uninterrupted run in a subprocess; how long its epochs and its report took."""
    out = tmp_path_factory.mktemp("kill") / "reference"
    proc = _start(train_argv(folder, out, "--epochs", str(KILL_EPOCHS), *KILL_ARGS))
    _wait_for_training(proc)
    start = time.time()
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    trained = (out / rundir.LAST).stat().st_mtime - start  # the last epoch's checkpoint
    return out, trained, time.time() - start - trained


@pytest.mark.slow
@pytest.mark.parametrize(
    "signals", KILL_SIGNALS, ids=["+".join(s.name for s in group) for group in KILL_SIGNALS]
)
def test_killed_at_random_moments_and_resumed_a_run_ends_bit_identical(
    signals, folder, reference_run, tmp_path
):
    """Kill the training process at seeded random moments after training starts (during an
    epoch, a checkpoint write, the test report and plots), resume each time: every resume
    succeeds, at most the unfinished epoch is lost, and the run ends with the uninterrupted run's
    checkpoints and metrics bit for bit."""
    reference, trained, reporting = reference_run
    out = tmp_path / "run"
    rng = random.Random(14 * 100 + sum(map(int, signals)))
    plan = kill_plan(KILLS)
    sigs = kill_signals(signals, KILLS)
    # The kills in training aim at seeded points spread evenly over the epochs (the j-th of n in
    # the j-th n-th of the run), so the first few do not finish the run and leave the rest to the
    # report. Each process starts again at the last finished epoch, hence the delays.
    in_training = sum(moment != "report" for moment in plan)
    epoch_time = trained / KILL_EPOCHS
    targets = [(j + rng.uniform(0.1, 0.9)) * KILL_EPOCHS / in_training for j in range(in_training)]
    landed: list[str] = []
    argv = train_argv(folder, out, "--epochs", str(KILL_EPOCHS), *KILL_ARGS)
    done_before = 0

    def writing_a_checkpoint() -> bool:
        return any("safetensors" in p.name for p in RunDir(out).temporaries())

    def trained_all() -> bool:
        return len(RunDir(out).read_metrics()) == KILL_EPOCHS

    for attempt in range(len(plan) + 20):
        proc = _start(argv if attempt == 0 else [*argv, "--resume"])
        moment = plan[attempt] if attempt < len(plan) else None
        sig = sigs[attempt] if attempt < len(sigs) else None
        caught_writing = False
        if moment is not None:
            start = _wait_for_training(proc)
            delay = (targets.pop(0) - done_before) * epoch_time if moment != "report" else 0.0
            if moment == "epoch":
                time.sleep(max(0.0, start + delay - time.monotonic()))
            elif moment == "write":  # the temporary file of a checkpoint's atomic write, caught
                time.sleep(max(0.0, start + delay - epoch_time - time.monotonic()))
                deadline = start + delay + 3 * epoch_time
                caught_writing = _wait_until(proc, writing_a_checkpoint, deadline)
            else:  # after the last epoch's metrics: in the test report and its plots
                _wait_until(proc, trained_all, start + 2 * trained + 60, every=0.005)
                # within the first half of the reference's report: this VM's speed drifts by up to
                # 40% within minutes, and a kill aimed late missed a report that ran faster
                time.sleep(rng.uniform(0.1, 0.5) * reporting)
            if proc.poll() is None:
                proc.send_signal(sig)
        output, _ = proc.communicate(timeout=300)
        if proc.returncode == 0:
            break
        expected = (-signal.SIGKILL,) if sig == signal.SIGKILL else (130, -signal.SIGINT)
        assert sig is not None and (proc.returncode in expected or "KeyboardInterrupt" in output), (
            f"attempt {attempt}: exit {proc.returncode}\n{output[-3000:]}"
        )
        done = (
            int(read_checkpoint(out / rundir.LAST)[1]["epoch"])
            if (out / rundir.LAST).exists()
            else 0
        )
        rows = len(RunDir(out).read_metrics())
        assert done >= done_before and done >= rows - 1  # at most the unfinished epoch lost
        # SIGKILL leaves the temporary behind (the next start removes it); SIGINT's handler removes it
        temporaries = [p.name.split(".")[1] for p in RunDir(out).temporaries()]
        landed.append(
            f"{sig.name} " + (
            f"writing {'+'.join(temporaries) or 'a file'}" if temporaries or caught_writing
            else "report/plots" if done == KILL_EPOCHS else f"epoch {done + 1}")
        )  # fmt: skip
        done_before = done
    else:
        pytest.fail("the run never finished")
    print(f"{len(landed)} kills landed: {landed}")
    # every planned kill landed, in each kind of moment: epochs, checkpoint writes, the report; each
    # signal in an epoch and in a write
    assert len(landed) == len(plan), landed
    assert any(s.endswith("report/plots") for s in landed), landed
    for sig in signals:
        assert any(s.startswith(f"{sig.name} epoch") for s in landed), landed
        assert any(s.startswith(f"{sig.name} writing") for s in landed), landed
    for name in (rundir.LAST, rundir.BEST):
        a, b = _state(reference / name), _state(out / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert _rows(out) == _rows(reference)
    test = json.loads((out / rundir.TEST_METRICS).read_text())
    assert test == json.loads((reference / rundir.TEST_METRICS).read_text())
    assert RunDir(out).temporaries() == []


# ---- several processes ----------------------------------------------------------------------------


def _torchrun(*args: str, timeout_s: str = "60") -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", CNNKIT_DDP_TIMEOUT=timeout_s)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", *args]
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    return done, time.monotonic() - start


@pytest.mark.slow
def test_when_one_rank_raises_the_job_ends_with_its_error_instead_of_hanging():
    script = os.path.join(os.path.dirname(__file__), "_ddp_rank_fails.py")
    done, seconds = _torchrun(script, "fail")
    assert done.returncode != 0
    assert "RuntimeError: rank 1 fails on purpose" in done.stderr
    assert seconds < 60  # torchrun stops rank 0 at once; the process group's timeout is 60 s


@pytest.mark.slow
def test_a_rank_that_hangs_ends_the_others_at_the_process_group_timeout():
    script = os.path.join(os.path.dirname(__file__), "_ddp_rank_fails.py")
    done, seconds = _torchrun(script, "hang", timeout_s="5")
    assert done.returncode != 0
    assert "PeerError: rank 0 of 2: a collective operation failed or waited longer than 5 s" in (
        done.stderr
    )
    assert seconds < 50  # rank 1 would sleep 60 s: rank 0 ended at the timeout, torchrun then


@pytest.mark.slow
def test_nproc_launches_torchrun_for_the_user(folder, tmp_path):
    out = tmp_path / "run"
    argv = train_argv(folder, out, "--epochs", "1", "--nproc", "2")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "cnnkit", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(
        "launching: torchrun --standalone --nproc_per_node 2 -m cnnkit train"
    )
    assert done.stdout.count("training lenet5") == 1  # rank 0 alone speaks
    config = json.loads((out / rundir.CONFIG).read_text())
    assert config["trainer"]["world_size"] == 2
    assert "--nproc" not in config["command"]


def test_a_ctrl_c_the_moment_the_temporary_exists_leaves_nothing_behind(tmp_path, monkeypatch):
    """The window a kill test caught: the temporary created, then KeyboardInterrupt before any
    byte is written. The file keeps what it held and no temporary is left."""
    from cnnkit.io import atomic_write_bytes

    target = tmp_path / "metrics.jsonl"
    target.write_bytes(b"old\n")
    real_open = os.open

    def open_then_interrupt(*args, **kwargs):
        os.close(real_open(*args, **kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr("cnnkit.io.os.open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new\n")
    monkeypatch.undo()
    assert target.read_bytes() == b"old\n" and sorted(tmp_path.iterdir()) == [target]
    atomic_write_bytes(target, b"new\n")
    assert target.read_bytes() == b"new\n" and sorted(tmp_path.iterdir()) == [target]
