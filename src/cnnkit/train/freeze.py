"""Freezing a pretrained base for transfer learning, and unfreezing it again.

The notes freeze the base with ``layer.trainable = False``, train a new head, then unfreeze and go on
at a lower learning rate. Since TensorFlow 2.0 a Keras ``BatchNormalization`` layer with
``trainable = False`` also runs in inference mode, so its moving statistics stay put (keras.io,
"Transfer learning & fine-tuning"). In
PyTorch ``requires_grad=False`` does not do that: ``model.train()`` puts BatchNorm back in training
mode, where it normalizes with the batch's statistics and overwrites ``running_mean``/``running_var``,
silently changing the "frozen" base. ``freeze`` therefore also pins frozen BatchNorm layers in eval
mode (a forward pre-hook resets ``training`` before every call, whatever ``model.train()`` did), and
``unfreeze`` removes the pin.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from torch import nn

_PIN_ATTR = "_cnnkit_frozen_bn_hook"


def _pin_eval(module: nn.Module, args: tuple) -> None:
    module.training = False


def _module_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def freeze(model: nn.Module, until: str = "fc") -> list[str]:
    """Freeze every parameter that comes before the module named ``until`` (in definition order).

    ``until`` and everything registered after it stay trainable; the default ``"fc"`` is the zoo's
    classifier (``cnnkit.models.model_info(name).classifier``), so the whole base is frozen and the head
    trains. A dotted name (``"blocks.12"``) freezes up to a block inside the network. BatchNorm layers
    in the frozen part are kept in inference mode. Returns the names of the frozen parameters.
    """
    names = _module_names(model)
    if until not in names:
        top = [n for n in names if "." not in n]
        raise ValueError(
            f"freeze: the model has no module {until!r}; its top-level modules are {top}"
        )
    frozen: list[str] = []
    for name, module in model.named_modules():
        if name == until:
            break
        if not name or name.startswith(until + "."):
            continue
        for param_name, param in module.named_parameters(recurse=False):
            param.requires_grad_(False)
            frozen.append(f"{name}.{param_name}")
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not hasattr(module, _PIN_ATTR):
            module.eval()
            setattr(module, _PIN_ATTR, module.register_forward_pre_hook(_pin_eval))
    return frozen


def unfreeze(model: nn.Module) -> None:
    """Make every parameter trainable and let BatchNorm layers follow ``model.train()`` again."""
    for module in model.modules():
        handle = getattr(module, _PIN_ATTR, None)
        if handle is not None:
            handle.remove()
            delattr(module, _PIN_ATTR)
        module.training = model.training
    for param in model.parameters():
        param.requires_grad_(True)


def trainable_parameters(model: nn.Module) -> int:
    """The number of parameter elements that will be trained."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def fine_tune(
    model: nn.Module,
    train: Iterable,
    valid: Iterable | None = None,
    *,
    classifier: str = "fc",
    frozen_epochs: int = 5,
    epochs: int = 5,
    lr: float = 1e-3,
    lr_factor: float = 0.1,
    patience: int | None = 3,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    **trainer_options: Any,
) -> list[dict[str, Any]]:
    """The notes' two phases with the ``Trainer``: train the head on a frozen base, then everything.

    Phase 1 (``frozen_epochs``): ``freeze(model, until=classifier)`` and train at ``lr``. Phase 2
    (``epochs``): ``unfreeze`` and continue at ``lr * lr_factor`` (the notes drop 0.2 to 0.01; Keras'
    guide uses 1/10 and lower), with early stopping on ``val_accuracy`` after ``patience`` epochs
    without improvement (restoring the best weights). Each phase has its own learning-rate schedule.
    With ``out_dir`` the run directory holds phase 2's best/last checkpoints and both phases'
    metrics, each row tagged with its ``phase``. Returns that combined history.
    """
    from cnnkit.train.callbacks import EarlyStopping
    from cnnkit.train.rundir import RunDir
    from cnnkit.train.trainer import Trainer

    history: list[dict[str, Any]] = []
    if frozen_epochs > 0:
        freeze(model, until=classifier)
        head = Trainer(model, lr=lr, out_dir=out_dir, **trainer_options)
        history += [
            dict(row, phase=1)
            for row in head.fit(train, valid, epochs=frozen_epochs, overwrite=overwrite)
        ]
    unfreeze(model)
    if epochs > 0:
        callbacks = list(trainer_options.pop("callbacks", ()))
        if valid is not None and patience is not None:
            callbacks.append(EarlyStopping("val_accuracy", patience=patience))
        whole = Trainer(
            model, lr=lr * lr_factor, callbacks=callbacks, out_dir=out_dir, **trainer_options
        )
        done = len(history)
        # The first phase already created the run directory; the second writes over its checkpoints.
        rows = whole.fit(train, valid, epochs=epochs, overwrite=overwrite or frozen_epochs > 0)
        history += [dict(row, phase=2, epoch=done + row["epoch"]) for row in rows]
    if out_dir is not None:
        RunDir(out_dir).write_metrics(history)
    return history
