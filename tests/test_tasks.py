"""The tasks layer: a new task trains through the public ``Task`` interface with the unchanged
Trainer; evaluation streams; classification refuses outputs that are not (N, K) logits; the registry
names what is valid."""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.data import TensorBatches
from cnnkit.tasks import SumMetric, Task, get_task, list_tasks, register_task
from cnnkit.train import EarlyStopping, Trainer


# ---- a toy second task: per-pixel classification ------------------------------------------------
class PixelAccuracy(SumMetric):
    names = ("pixels", "correct", "loss")

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self.add(
            pixels=float(target.numel()),
            correct=(output.argmax(1) == target).sum(),
            loss=F.cross_entropy(output.float(), target, reduction="sum"),
        )

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        return {
            "loss": totals["loss"] / totals["pixels"],
            "pixel_accuracy": totals["correct"] / totals["pixels"],
        }


@register_task
class PixelClasses(Task):
    """Per-pixel classes: logits (N, K, H, W) against label maps (N, H, W)."""

    name = "toy-pixels"
    monitor = "val_pixel_accuracy"
    monitor_mode = "max"

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        loss = F.cross_entropy(output.float(), target)
        return loss, {"pixels": loss}

    def train_metrics(self) -> PixelAccuracy:
        return PixelAccuracy()

    def eval_metrics(self) -> PixelAccuracy:
        return PixelAccuracy()

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        return output.argmax(1)


def pixel_data(n: int = 8, size: int = 12, flip: bool = False) -> TensorBatches:
    """Random grey images whose label map is the brightness band of each pixel (0, 1 or 2)."""
    images = torch.randint(0, 256, (n, 1, size, size), generator=torch.Generator().manual_seed(1))
    labels = torch.bucketize(images[:, 0], torch.tensor([85, 170]), right=True)
    return TensorBatches(
        images.to(torch.uint8), labels, 4, shuffle=True, mean=(0.5,), std=(0.25,), flip=flip
    )


def test_a_new_task_trains_through_the_unchanged_trainer(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 1), nn.ReLU(), nn.Conv2d(16, 3, 1))
    task = get_task("toy-pixels")
    trainer = Trainer(
        model, task=task, lr=0.05, device="cpu", progress=False, out_dir=tmp_path / "run",
        callbacks=[EarlyStopping(patience=50)],
    )  # fmt: skip
    history = trainer.fit(pixel_data(), pixel_data(), epochs=40)
    # The bands are thresholds of the pixel's own value: a 1x1 network learns them almost exactly.
    assert history[-1]["val_pixel_accuracy"] > 0.95
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert set(history[0]) >= {"loss", "pixel_accuracy", "val_loss", "val_pixel_accuracy"}
    assert trainer.predict(torch.zeros(5, 1, 12, 12)).shape == (5, 12, 12)
    # The best checkpoint watched the task's monitor (ties go to the lower val_loss), not
    # classification's accuracy, which these rows do not have.
    best = min(history, key=lambda r: (-r["val_pixel_accuracy"], r["val_loss"], r["epoch"]))
    from cnnkit.train.checkpoint import read_checkpoint

    _, meta = read_checkpoint(tmp_path / "run" / "best.safetensors")
    assert int(meta["epoch"]) == best["epoch"]


def test_flipped_batches_flip_their_label_maps_too():
    for x, y in pixel_data(flip=True):
        pixels = (x[:, 0] * 0.25 + 0.5) * 255
        expected = torch.bucketize(pixels.round(), torch.tensor([85.0, 170.0]), right=True)
        assert torch.equal(y, expected)


def test_classification_refuses_per_pixel_outputs():
    model = nn.Conv2d(1, 3, 1)  # (N, 3, H, W) logits
    trainer = Trainer(model, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"output has shape \(4, 3, 12, 12\).*segment"):
        trainer.fit(pixel_data(), epochs=1)


# ---- streaming evaluation -----------------------------------------------------------------------
class Tracked(nn.Module):
    """Records how many of its earlier outputs are still alive whenever it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 10)
        self.outputs: list[weakref.ref] = []
        self.most_alive = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alive = sum(ref() is not None for ref in self.outputs)
        self.most_alive = max(self.most_alive, alive)
        out = self.fc(x.flatten(1))
        self.outputs.append(weakref.ref(out))
        return out


def test_evaluation_keeps_no_batch_output_so_host_memory_does_not_grow():
    model = Tracked()
    trainer = Trainer(model, device="cpu", progress=False)
    batches = ((torch.randn(16, 4), torch.randint(0, 10, (16,))) for _ in range(200))
    metrics = trainer.evaluate(batches)
    assert len(model.outputs) == 200 and 0 <= metrics["accuracy"] <= 1
    # Nothing of an earlier batch survives the next forward: memory is one batch, whatever the count.
    assert model.most_alive <= 1


def test_evaluation_equals_the_whole_set_computed_at_once():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    trainer = Trainer(model, device="cpu", progress=False, channels_last=False)
    metrics = trainer.evaluate(list(zip(x.split(7), y.split(7), strict=True)))
    with torch.no_grad():
        logits = model(x)
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert metrics["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    top = logits.topk(3, 1).indices
    assert metrics["top5"] == pytest.approx((top == y[:, None]).any(1).float().mean().item())


# ---- the registry ---------------------------------------------------------------------------------
def test_the_registry_lists_valid_names_and_options():
    assert "classify" in list_tasks()
    with pytest.raises(ValueError, match="unknown task 'clasify'; choose one of: classify"):
        get_task("clasify")
    with pytest.raises(
        ValueError, match="has no option 'smoothing'; its options are: label_smoothing"
    ):
        get_task("classify", smoothing=0.1)
    assert get_task("classify", label_smoothing=0.1).options()["label_smoothing"] == 0.1


def test_the_cli_choices_are_their_owners_names():
    from cnnkit.cli import _common, evaluate, predict
    from cnnkit.train import OPTIMIZERS, SCHEDULES, rundir

    assert tuple(OPTIMIZERS) == _common.OPTIMIZER_CHOICES
    assert tuple(SCHEDULES) == _common.SCHEDULE_CHOICES
    assert set(_common.TASK_CHOICES) <= set(list_tasks())
    assert (evaluate.BEST, evaluate.LAST) == (rundir.BEST, rundir.LAST)
    assert (predict.BEST, predict.LAST) == (rundir.BEST, rundir.LAST)
