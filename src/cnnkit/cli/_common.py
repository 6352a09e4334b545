"""What the training commands share: building a run's model from its config, finishing a run
(test metrics and plots), and parsing options."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from cnnkit.cli import CLIError
from cnnkit.data import TensorBatches
from cnnkit.data.datasets import ImageClassificationData
from cnnkit.models import create_model
from cnnkit.train import RunDir, Trainer, rundir
from cnnkit.train.checkpoint import load_checkpoint
from cnnkit.train.metrics import confusion_matrix, per_class_accuracy
from cnnkit.viz.training import plot_confusion_matrix, plot_history, plot_predictions

TEST_METRICS = "test_metrics.json"


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` → dict, values parsed as JSON when they can be (``3``, ``true``)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"--model-option: expected KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def model_from_config(config: dict[str, Any], source: Path) -> torch.nn.Module:
    try:
        spec = config["model"]
        return create_model(
            spec["name"],
            num_classes=spec["num_classes"],
            in_channels=spec["in_channels"],
            **spec.get("options", {}),
        )
    except KeyError as exc:
        raise CLIError(f"{source}: field 'model.{exc.args[0]}' is missing") from None


def load_run(
    path: str | Path, checkpoint: str = rundir.BEST
) -> tuple[RunDir, dict, torch.nn.Module]:
    """A run directory's config and its model with the ``checkpoint`` weights loaded."""
    run = RunDir(path)
    config = run.read_config()
    model = model_from_config(config, run / rundir.CONFIG)
    load_checkpoint(run / checkpoint, model)
    return run, config, model.eval()


def test_batches(data: ImageClassificationData, batch_size: int = 500) -> TensorBatches:
    x, y = data.test
    return TensorBatches(x, y, batch_size, mean=data.mean, std=data.std)


def test_report(
    trainer: Trainer, data: ImageClassificationData
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Test-set metrics, the confusion matrix and the predicted classes of ``trainer.model``."""
    probs = trainer.predict(test_batches(data))
    labels = data.test[1]
    preds = probs.argmax(1)
    matrix = confusion_matrix(preds, labels, len(data.class_names))
    metrics = {
        "test_loss": torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels).item(),
        "test_accuracy": (preds == labels).float().mean().item(),
        "per_class_accuracy": dict(
            zip(data.class_names, per_class_accuracy(matrix).tolist(), strict=True)
        ),
    }
    return metrics, matrix, preds


def finish_run(run: RunDir, trainer: Trainer, data: ImageClassificationData) -> dict[str, Any]:
    """Evaluate the best weights on the test set; write test metrics and the three plots."""
    if (run / rundir.BEST).is_file():
        load_checkpoint(run / rundir.BEST, trainer.model)
    metrics, matrix, preds = test_report(trainer, data)
    labels = data.test[1]
    run.write_json(TEST_METRICS, metrics)
    if trainer.history:
        plot_history(trainer.history, run / rundir.HISTORY_PLOT, trainer.label_smoothing)
    plot_confusion_matrix(matrix.numpy(), data.class_names, run / rundir.CONFUSION_PLOT)
    images = data.test[0][:32].permute(0, 2, 3, 1).squeeze(-1).numpy()
    plot_predictions(
        images,
        preds[:32].tolist(),
        labels[:32].tolist(),
        data.class_names,
        run / rundir.PREDICTIONS_PLOT,
    )
    return metrics


def print_class_table(class_names: tuple[str, ...] | list[str], accuracy: list[float]) -> None:
    width = max(len(n) for n in class_names)
    print(f"  {'class':<{width}}  accuracy")
    for name, acc in zip(class_names, accuracy, strict=True):
        print(f"  {name:<{width}}  {acc:7.2%}")


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``cnnkit train`` and ``cnnkit demo``."""
    from cnnkit.train import OPTIMIZERS, SCHEDULES

    p.add_argument("--batch-size", default="128", help="an integer, or 'auto' (largest that fits)")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adamw")
    p.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (default: per optimizer)"
    )
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=list(SCHEDULES), default="onecycle")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, mps"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flip", action="store_true", help="augment with random horizontal flips")
    p.add_argument("--patience", type=int, default=None, help="early stopping on val_loss")
    p.add_argument("--train-limit", type=int, default=None, help="train on the first N images only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
