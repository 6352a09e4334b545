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

import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cnnkit.train.callbacks import Callback, _Monitoring

if TYPE_CHECKING:
    from cnnkit.train.trainer import Batches

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
        _pin_bn(module)
    return frozen


def _pin_bn(module: nn.Module) -> None:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not hasattr(module, _PIN_ATTR):
        module.eval()
        setattr(module, _PIN_ATTR, module.register_forward_pre_hook(_pin_eval))


def unfreeze(model: nn.Module, *, bn_stats: bool = True) -> None:
    """Make every parameter trainable.

    With ``bn_stats=True`` BatchNorm layers follow ``model.train()`` again, so training re-estimates
    their running statistics on the new data. ``bn_stats=False`` keeps every BatchNorm layer in
    inference mode (its scale and shift still train): the Keras guide's advice for fine-tuning, which
    protects the pretrained statistics from small, noisy batches.
    """
    for module in model.modules():
        handle = getattr(module, _PIN_ATTR, None)
        if handle is not None:
            handle.remove()
            delattr(module, _PIN_ATTR)
        module.training = model.training
        if not bn_stats:
            _pin_bn(module)
    for param in model.parameters():
        param.requires_grad_(True)


def trainable_parameters(model: nn.Module) -> int:
    """The number of parameter elements that will be trained."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class _BestWeights(_Monitoring):
    """Callback keeping a copy of the weights at the best value of the task's monitored metric,
    across ``fit`` calls (each phase of ``fine_tune`` is one), ties broken as ``BestCheckpoint``
    breaks them."""

    def __init__(self) -> None:
        super().__init__(None)
        self.state: dict[str, torch.Tensor] | None = None
        self.seen = False

    def on_train_begin(self, trainer: Any) -> None:
        super().on_train_begin(trainer)
        if not self.seen:  # a resumed run: the epochs before the resume set the score to beat
            self.seen = True
            for row in trainer.history:
                if self.improves(row):
                    self.remember(row)

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, Any]) -> None:
        if self.improves(logs):
            self.remember(logs)
            self.state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def fine_tune(
    model: nn.Module,
    train: Batches,
    valid: Iterable | None = None,
    *,
    classifier: str = "fc",
    frozen_epochs: int = 5,
    epochs: int = 10,
    lr: float = 1e-3,
    lr_factor: float = 0.1,
    patience: int | None = 3,
    bn_stats: bool = False,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    resume: bool = False,
    **trainer_options: Any,
) -> list[dict[str, Any]]:
    """The notes' two phases with the ``Trainer``: train the head on a frozen base, then everything.

    ``epochs`` counts every epoch, as ``cnnkit train``'s does: phase 1 is the first
    ``frozen_epochs``: ``freeze(model, until=classifier)`` and train at ``lr``; phase 2 the rest:
    ``unfreeze(model, bn_stats=bn_stats)`` and continue at ``lr * lr_factor`` (the notes drop 0.2 to
    0.01; Keras' guide uses 1/10 and lower), with early stopping on the task's monitored metric after
    ``patience`` epochs without improvement. Each phase has its own learning-rate schedule. With
    ``valid`` the model ends with the weights of the best validation epoch of *either* phase (phase 2
    can lose accuracy when the base is far from the new data). With ``out_dir`` the run directory holds
    that best checkpoint, the last one, and both phases' metrics, each row tagged with its ``phase``;
    ``resume=True`` continues an interrupted run in whichever phase it stopped. Returns the history.
    """
    from cnnkit.train.callbacks import EarlyStopping
    from cnnkit.train.checkpoint import load_checkpoint, read_checkpoint
    from cnnkit.train.rundir import BEST, LAST, RunDir
    from cnnkit.train.trainer import Trainer

    if not 0 <= frozen_epochs <= epochs or epochs < 1:
        raise ValueError(
            f"fine_tune: expected 0 <= frozen_epochs <= epochs and epochs >= 1, got "
            f"frozen_epochs={frozen_epochs}, epochs={epochs}"
        )
    user_callbacks = list(trainer_options.pop("callbacks", ()))
    best = _BestWeights()
    tracking: list[Callback] = [best] if valid is not None else []
    run = RunDir(out_dir) if out_dir is not None else None
    done, resumed_phase = 0, 1
    if resume and run is not None and (run / LAST).is_file():
        _, metadata = read_checkpoint(run / LAST)
        done = int(metadata.get("epoch", 0))
        start = json.loads(metadata.get("extra", "{}")).get("start_epoch", 0)
        resumed_phase = 2 if frozen_epochs == 0 or start == frozen_epochs else 1
    history: list[dict[str, Any]] = []
    if frozen_epochs > 0 and resumed_phase == 1 and done < frozen_epochs:
        freeze(model, until=classifier)
        head = Trainer(
            model,
            lr=lr,
            out_dir=out_dir,
            callbacks=user_callbacks + tracking,
            log_extra={"phase": 1},
            **trainer_options,
        )
        history = head.fit(
            train,
            valid,
            epochs=frozen_epochs,
            overwrite=overwrite or (resume and done == 0),
            resume=resume and done > 0,
        )
        done = head.epoch
    elif run is not None and resumed_phase == 1:
        # Phase 1 had finished: phase 2 starts from its last weights (its optimizer state
        # covers the head alone, so it is not carried over).
        load_checkpoint(run / LAST, model)
        history = run.read_metrics()[:done]
    unfreeze(model, bn_stats=bn_stats)
    if epochs > frozen_epochs:
        callbacks = user_callbacks + tracking
        if valid is not None and patience is not None:
            callbacks.append(EarlyStopping(patience=patience, restore_best=False))
        whole = Trainer(
            model,
            lr=lr * lr_factor,
            callbacks=callbacks,
            out_dir=out_dir,
            log_extra={"phase": 2},
            **trainer_options,
        )
        whole.start_epoch = frozen_epochs
        phase2_resume = resume and resumed_phase == 2 and done > frozen_epochs
        if not phase2_resume:
            whole.epoch, whole.history = frozen_epochs, list(history)
            if run is not None:
                whole.steps = run.read_steps()
        # The first phase already created the run directory; the second goes on writing into it.
        history = whole.fit(
            train,
            valid,
            epochs=epochs,
            overwrite=overwrite or frozen_epochs > 0 or resume,
            resume=phase2_resume,
        )
    if best.state is not None:
        model.load_state_dict(best.state)
    elif run is not None and valid is not None and (run / BEST).is_file():
        load_checkpoint(run / BEST, model)  # a resumed run whose best epoch came before the resume
    unfreeze(model)  # leave a plain trainable model: no BatchNorm pinned in inference mode
    return history
