"""The model registry: every model is a small builder function that states its configuration.

``@register_model(...)`` records a builder under its function name together with what users and
tools need to know without building it: the paper's input size, the smallest input it accepts, the
attribute path of its classifier (so transfer learning knows where the head is), the paper, and the
task whose output contract it follows: "classify" ((N, num_classes) logits), "segment"
((N, num_classes, H, W) logits at the input size), "localize" (``{"logits", "boxes"}``) or
"superres" ((N, num_classes, scale·H, scale·W): the upscaled image, ``models/superres.py``).
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model without building it."""

    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int]  # (C, H, W) the paper trained on
    min_size: int  # smallest height/width the model accepts
    classifier: str  # attribute path of the final dense layer, e.g. "fc" or "head.fc"
    paper: str
    task: str = "classify"  # the output contract (docs/ARCHITECTURE.md): classify, detect, segment, localize, superres

    @property
    def parameters(self) -> Mapping[str, inspect.Parameter]:
        """The builder's parameters by name: the options ``create_model`` accepts, with defaults."""
        return inspect.signature(self.builder).parameters


TASKS = ("classify", "detect", "segment", "localize", "superres")
_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *,
    input_size: tuple[int, int, int],
    min_size: int,
    classifier: str,
    paper: str,
    task: str = "classify",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder ``fn(num_classes=..., in_channels=..., **options) -> nn.Module``.

    ``task`` names the output contract (``docs/ARCHITECTURE.md``): ``"classify"`` (N, num_classes)
    logits, ``"detect"`` a detection grid (``models/yolo.py``), ``"segment"`` (N, K, H, W) logits,
    ``"localize"`` ``{"logits": (N, K), "boxes": (N, 4)}`` (``models/localizer.py``),
    ``"superres"`` the upscaled image (N, num_classes, scale·H, scale·W) (``models/superres.py``)."""
    if task not in TASKS:
        raise ValueError(f"register_model: task={task!r}; expected one of {', '.join(TASKS)}")

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, fn, input_size, min_size, classifier, paper, task)
        return fn

    return decorate


def list_models(pattern: str = "*", task: str | None = "classify") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted.

    Only the models of ``task`` ("classify" by default, the contract every caller relied on before
    segmentation models joined the registry); ``task=None`` lists every task's models.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"list_models: task={task!r}; expected None or one of {', '.join(TASKS)}")
    return sorted(
        n
        for n, info in _REGISTRY.items()
        if fnmatch.fnmatch(n, pattern) and (task is None or info.task == task)
    )


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models(task=None))}"
        ) from None


def create_model(
    name: str, num_classes: int | None = None, in_channels: int | None = None, **options
) -> nn.Module:
    """Build a registered model.

    ``num_classes`` and ``in_channels`` left ``None`` keep the builder's defaults (1000 classes and
    3 channels for the ImageNet models, the paper's configuration). ``num_classes=0`` returns the pooled features instead of class scores (Keras' ``include_top=False``).
    Options a builder does not take are an error that lists the ones it does.
    """
    info = model_info(name)
    params = info.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params]
    if unknown and not takes_any:
        valid = [k for k in params if k not in ("num_classes", "in_channels")]
        raise ValueError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(valid) or '(none)'}"
        )
    if num_classes is not None:
        options["num_classes"] = num_classes
    if in_channels is not None:
        options["in_channels"] = in_channels
    return info.builder(**options)
