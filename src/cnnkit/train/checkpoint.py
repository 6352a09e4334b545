"""Checkpoints as single safetensors files (no pickle: loading never runs code).

One file holds the model's state dict under ``model/``, the optimizer's tensor state under
``optimizer/<param index>/<name>``, with an exponential moving average of the weights
(``Trainer(ema=…)``) its ``AveragedModel`` state under ``ema/`` (checkpoints without it load as
before, and loading only the model ignores it), and in the string metadata the optimizer's param groups and
scalar state, the schedule's state, the epoch and anything the caller adds (all JSON). Files are
written to a temporary name and renamed into place, so a crash never leaves a half-written
checkpoint where a good one was.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from cnnkit.io import atomic_write
from cnnkit.models.checkpoints import load_state_dict_strict

FORMAT = "cnnkit-checkpoint-1"
EMA_PREFIX = "ema/"  # the AveragedModel's state dict: "module.<name>" and "n_averaged"


class DiskFullError(OSError):
    """The disk filled up while a checkpoint was written. The message names the file, the
    checkpoint's size and the free space; the file it would have replaced is intact."""


def _is_disk_full(exc: BaseException) -> bool:
    """``ENOSPC`` as Python raises it, or as safetensors' Rust writer reports it."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    if isinstance(exc, SafetensorError):
        text = str(exc)
        return "No space left" in text or "StorageFull" in text or "os error 28" in text
    return False


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory: copy all but the first of each group."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        ident = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()))
        if ident in seen and tensor.numel() > 0:
            tensor = tensor.clone()
        seen.add(ident)
        out[key] = tensor
    return out


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    *,
    epoch: int = 0,
    extra: dict[str, Any] | None = None,
    ema: torch.nn.Module | None = None,
) -> None:
    """Save ``model`` (and optionally the optimizer, schedule, the weights' moving average ``ema``
    — a ``torch.optim.swa_utils.AveragedModel`` — and ``extra`` JSON) to ``path``."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"{EMA_PREFIX}{k}": v for k, v in ema.state_dict().items()})
    metadata = {"format": FORMAT, "epoch": str(epoch), "extra": json.dumps(extra or {})}
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, param_state in state["state"].items():
            for name, value in param_state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer/{index}/{name}"] = value
                else:
                    scalars.setdefault(str(index), {})[name] = value
        metadata["optimizer_param_groups"] = json.dumps(state["param_groups"])
        metadata["optimizer_scalars"] = json.dumps(scalars)
    if scheduler is not None:
        metadata["scheduler"] = json.dumps(scheduler.state_dict(), default=_not_json)
    tensors = _unshare(tensors)
    try:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    except (OSError, SafetensorError) as exc:
        if not _is_disk_full(exc):
            raise
        # the file's size: the tensors' bytes and a JSON header (about 100 bytes per tensor)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        size += len(json.dumps(metadata)) + 100 * len(tensors)
        free = shutil.disk_usage(Path(path).parent).free
        error = DiskFullError(
            f"{path}: the disk is full: the checkpoint needs {_megabytes(size)} and "
            f"{_megabytes(free)} are free on that disk: make room and continue with --resume "
            "(the earlier checkpoints are intact)"
        )
        error.errno = errno.ENOSPC
        raise error from None


def _not_json(value: Any) -> None:
    # Schedules keep their lambdas in the state dict; they are rebuilt from the config, not saved.
    return None


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a checkpoint; a file that is not one is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path}: metadata 'format' is {metadata.get('format')!r}, expected {FORMAT!r}"
        )
    return tensors, metadata


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    ema: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote.

    Returns ``{"epoch": ..., "extra": {...}, "scheduler": state or None}``; the schedule's state is
    loaded into ``scheduler`` when one is given, the moving average into ``ema`` (a file without
    one is then an error).

    Model keys are checked strictly (``cnnkit.models.checkpoints.load_state_dict_strict``, the one
    place): a missing, unexpected or mis-shaped key is an error naming it.
    """
    tensors, metadata = read_checkpoint(path)
    model_state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    load_state_dict_strict(model, model_state, str(path))
    if ema is not None:
        ema_state = {
            k[len(EMA_PREFIX) :]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)
        }
        if not ema_state:
            raise ValueError(
                f"{path}: holds no moving average of the weights ('{EMA_PREFIX}…' tensors): it was "
                "written by a run without ema"
            )
        load_state_dict_strict(ema, ema_state, str(path))
    if optimizer is not None:
        if "optimizer_param_groups" not in metadata:
            raise ValueError(f"{path}: holds no optimizer state (a weights-only file?)")
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        for index, scalars in json.loads(metadata["optimizer_scalars"]).items():
            state.setdefault(int(index), {}).update(scalars)
        optimizer.load_state_dict(
            {"state": state, "param_groups": json.loads(metadata["optimizer_param_groups"])}
        )
    scheduler_state = json.loads(metadata["scheduler"]) if "scheduler" in metadata else None
    if scheduler is not None and scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    return {
        "epoch": int(metadata.get("epoch", 0)),
        "extra": json.loads(metadata.get("extra", "{}")),
        "scheduler": scheduler_state,
    }
