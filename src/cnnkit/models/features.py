"""Backbones for heads: stage features without the classifier.

``create_model(name, features_only=True)`` builds any zoo model as a feature extractor, the role of
timm's ``features_only=True`` (``timm.models.FeatureListNet``) and torchvision's
``create_feature_extractor``: ``forward`` returns the list of stage maps, and the modules that only
the classification head uses — the classifier, GoogLeNet's auxiliary classifiers, the dense layers
of AlexNet, VGG, LeNet-5 and the Fashion-MNIST CNN, EfficientNet's 1×1 head conv — are not built, so
every parameter of a feature extractor receives a gradient (``DistributedDataParallel`` refuses
unused parameters unless told to look for them on every step).

Each family states its stages once; the model carries them as ``feature_info``, a list with one
entry per stage, shallowest first, as timm's ``feature_info``:
``{"channels": C, "reduction": r, "name": module}``, where the stage's map of an H×W input is
about H/r × W/r (exactly ``ceil(H / r)`` for the 'same'-padded models) and ``name`` the module whose
output it is (for LeNet-5, the layer before its squashing function, which the layers share).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from torch import nn

from cnnkit.models.registry import create_model, model_info


class FeatureInfo(TypedDict):
    """One stage of a feature extractor (timm's ``num_chs``, ``reduction``, ``module``)."""

    channels: int
    reduction: int
    name: str


def make_feature_info(
    channels: Sequence[int], reductions: Sequence[int], names: Sequence[str]
) -> list[FeatureInfo]:
    """``feature_info`` from the three per-stage lists a family states (equal lengths)."""
    if not len(channels) == len(reductions) == len(names):
        raise ValueError(
            f"feature_info: {len(channels)} channels, {len(reductions)} reductions and "
            f"{len(names)} names; expected one of each per stage"
        )
    return [
        FeatureInfo(channels=c, reduction=r, name=n)
        for c, r, n in zip(channels, reductions, names, strict=True)
    ]


def create_backbone(name: str, in_channels: int, **options) -> tuple[nn.Module, list[FeatureInfo]]:
    """A registered model built with ``features_only=True`` (``options`` go to its builder), and its
    ``feature_info``: ``forward(x)`` returns the maps of those stages, shallowest first.

    A model that takes no ``features_only`` (a segmentation model, say) is not a backbone:
    ``ValueError``.
    """
    model = create_model(name, in_channels=in_channels, features_only=True, **options)
    feature_info = getattr(model, "feature_info", None)
    if not isinstance(feature_info, list):
        info = model_info(name)
        raise ValueError(
            f"backbone {name!r} ({info.paper}) has no feature_info; expected a zoo model whose "
            "features_only=True returns its stage maps"
        )
    return model, feature_info
