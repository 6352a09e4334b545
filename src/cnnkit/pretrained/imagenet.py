"""The 1,000 ImageNet-1k classes and ``decode_predictions``, as Keras' ``applications`` have them.

``imagenet_classes.json`` (package data) lists ``[wordnet_id, name]`` in output order: the sorted WordNet
ids every ImageNet-1k classifier uses, with torchvision's class names. How it was made and checked:
``benchmarks/make_imagenet_classes.py``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import torch

Prediction = tuple[str, str, float]  # (wordnet_id, name, probability)


@cache
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """``((wordnet_id, name), ...)`` for the 1,000 outputs, index = class id."""
    text = resources.files("cnnkit.pretrained").joinpath("imagenet_classes.json").read_text()
    classes = tuple((wnid, name) for wnid, name in json.loads(text)["classes"])
    if len(classes) != 1000:
        raise ValueError(f"imagenet_classes.json: expected 1000 classes, found {len(classes)}")
    return classes


def decode_predictions(
    probs: torch.Tensor,
    top: int = 3,
    classes: list[tuple[str, str]] | tuple[tuple[str, str], ...] | None = None,
) -> list[list[Prediction]]:
    """Per image, the ``top`` most probable ``(wordnet_id, name, probability)``, most probable first.

    ``probs`` is (N, num_classes); ``classes`` defaults to ImageNet's 1,000 (for a fine-tuned model
    pass its own ``(id, name)`` pairs). Ties keep the lower class index first (a stable sort;
    ``torch.topk`` promises no order among equal values).
    """
    if probs.ndim == 1:
        probs = probs[None]
    if probs.ndim != 2:
        raise ValueError(f"probs: expected shape (N, num_classes), got {tuple(probs.shape)}")
    classes = imagenet_classes() if classes is None else classes
    if probs.shape[1] != len(classes):
        raise ValueError(
            f"probs has {probs.shape[1]} columns but there are {len(classes)} class names; "
            "pass classes= for a model that is not an ImageNet-1k classifier"
        )
    top = min(top, probs.shape[1])
    values, indices = probs.detach().float().cpu().sort(dim=1, descending=True, stable=True)
    values, indices = values[:, :top], indices[:, :top]
    return [
        [(classes[i][0], classes[i][1], float(p)) for p, i in zip(row_p, row_i, strict=True)]
        for row_p, row_i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def format_predictions(predictions: list[Prediction]) -> list[str]:
    """The notes' lines: ``n03877845 - palace       42.87%``."""
    return [f"{wnid} - {name:12s} {p * 100:.2f}%" for wnid, name, p in predictions]
