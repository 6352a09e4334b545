"""The run-directory layout: the one place that names the files a training run writes.

    runs/NAME/
      config.json           everything needed to rebuild the model and reproduce the run
      metrics.jsonl         one JSON object per epoch (loss, the task's metrics, val_*, lr, time)
      steps.jsonl           the training loss every few steps ({"epoch": fraction, "loss": ...})
      best.safetensors      weights + optimizer state at the best validation score
      last.safetensors      weights + optimizer state after the last finished epoch (for --resume)
      test_metrics.json     the task's test report (written at the end of a run)
      speedrun.json         cnnkit speedrun: wall time, epochs, test accuracy, whether the target was met
      history.png           training loss per step, validation points per epoch, the task's metric
      confusion_matrix.png  classification: test-set confusion matrix
      predictions.png       a grid of test images with their predictions drawn
      segmentation.png      segmentation: test images with predicted and true masks, a legend
      localization.png      localization: test images with true (green) and predicted (red) boxes
      precision_recall.png  detection: test-set precision-recall curve per class (IoU 0.5)
      detections.png        detection: test scenes with their detections drawn

Every file is written through a temporary file and an atomic rename (``cnnkit.io.atomic_write``:
``.NAME.XXXXXXXX.tmp`` beside it). A process killed mid-write leaves that temporary behind; it is
removed when a run starts or resumes in the folder, and never listed among the run's results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cnnkit.io import atomic_write_bytes

CONFIG = "config.json"
METRICS = "metrics.jsonl"
STEPS = "steps.jsonl"
TEST_METRICS = "test_metrics.json"
SPEEDRUN = "speedrun.json"
BEST = "best.safetensors"
LAST = "last.safetensors"
HISTORY_PLOT = "history.png"
CONFUSION_PLOT = "confusion_matrix.png"
PREDICTIONS_PLOT = "predictions.png"
SEGMENTATION_PLOT = "segmentation.png"
LOCALIZATION_PLOT = "localization.png"
PRECISION_RECALL_PLOT = "precision_recall.png"
DETECTIONS_PLOT = "detections.png"


class RunDir:
    """A run directory: creates it, refuses to overwrite another run, reads and writes its files."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def create(self, *, resume: bool = False, overwrite: bool = False) -> bool:
        """Make the folder and remove stale temporaries; return whether there is a checkpoint to
        resume from.

        An existing run is kept unless ``resume`` or ``overwrite`` says otherwise. ``resume`` of a
        folder without ``last.safetensors`` (a run killed in its first epoch leaves only
        ``config.json``) returns ``False``: the run starts from the beginning."""
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"{self.path}: exists and is not a directory")
        if not resume and (self.path / CONFIG).exists() and not overwrite:
            raise FileExistsError(
                f"{self.path}: already holds a run; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.remove_temporaries()
        return resume and self.has_checkpoint()

    def has_checkpoint(self) -> bool:
        """Whether ``last.safetensors`` exists (at least one epoch finished)."""
        return (self.path / LAST).is_file()

    def temporaries(self) -> list[Path]:
        """Temporary files that an interrupted atomic write left behind (``.NAME.*.tmp``)."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.glob(".*.tmp") if p.is_file())

    def remove_temporaries(self) -> list[Path]:
        """Delete :meth:`temporaries` (call it only while no other process writes this run)."""
        stale = self.temporaries()
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def results(self) -> list[str]:
        """The names of the run's files, temporaries and other hidden files left out, sorted."""
        return sorted(p.name for p in self.path.iterdir() if not p.name.startswith("."))

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_bytes(self.path / name, (json.dumps(obj, indent=2) + "\n").encode())

    def read_config(self) -> dict[str, Any]:
        path = self.path / CONFIG
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; is {self.path} a cnnkit run directory?")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        self._write_lines(METRICS, history)

    def read_metrics(self) -> list[dict[str, Any]]:
        return self._read_lines(METRICS)

    def write_steps(self, steps: list[dict[str, float]]) -> None:
        self._write_lines(STEPS, steps)

    def read_steps(self) -> list[dict[str, Any]]:
        return self._read_lines(STEPS)

    def _write_lines(self, name: str, rows: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(row) + "\n" for row in rows)
        atomic_write_bytes(self.path / name, lines.encode())

    def _read_lines(self, name: str) -> list[dict[str, Any]]:
        path = self.path / name
        if not path.is_file():
            return []
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}: line {number} is not valid JSON") from None
        return rows
