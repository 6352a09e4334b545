"""``load(name)``: a zoo model with pretrained weights, its preprocessing and its class names."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnkit.device import pick_device
from cnnkit.models import create_model
from cnnkit.models.checkpoints import convert_state_dict, load_state_dict_strict
from cnnkit.pretrained.imagenet import Prediction, decode_predictions, imagenet_classes
from cnnkit.pretrained.preprocess import Preprocess
from cnnkit.pretrained.weights import Weights, get_weights, locate, read_state_dict, verify_file

ImageLike = Image.Image | np.ndarray


@dataclass
class Pretrained:
    """A pretrained classifier: ``model`` (eval mode), ``preprocess``, ``class_names``, ``predict``."""

    model: nn.Module
    preprocess: Preprocess
    class_ids: list[str]
    class_names: list[str]
    weights: Weights | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def batch(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Preprocess one image or a list into an N×3×H×W float tensor."""
        if isinstance(images, Image.Image | np.ndarray) and not (
            isinstance(images, np.ndarray) and images.ndim == 4
        ):
            images = [images]
        return torch.stack([self.preprocess(image) for image in images])

    @torch.no_grad()
    def predict(
        self, images: ImageLike | Sequence[ImageLike] | torch.Tensor, batch_size: int = 32
    ) -> torch.Tensor:
        """Class probabilities, (N, num_classes) on the CPU.

        ``images``: a PIL image or uint8 H×W×3 array, a list of them, an N×H×W×3 uint8 array, or an
        already preprocessed N×3×H×W float tensor.
        """
        x = images if isinstance(images, torch.Tensor) else self.batch(images)
        self.model.eval()
        out = []
        for start in range(0, len(x), batch_size):
            logits = self.model(x[start : start + batch_size].to(self.device))
            out.append(logits.float().softmax(dim=1).cpu())
        return torch.cat(out)

    def decode(self, probs: torch.Tensor, top: int = 3) -> list[list[Prediction]]:
        """``decode_predictions`` with this model's classes."""
        return decode_predictions(
            probs, top, list(zip(self.class_ids, self.class_names, strict=True))
        )


def load_weights(
    model: nn.Module, weights: Weights, path: str | os.PathLike | None = None, verify: bool = True
) -> None:
    """Read ``path`` (default: the registered file), map its keys and load it strictly into ``model``.

    A file given by the caller is not checked against the registry's sha256 (it may be a fine-tuned
    or re-saved copy); the registered file always is.
    """
    if path is None:
        path = locate(weights)
        if verify:
            verify_file(path, weights.sha256)
    state_dict = read_state_dict(path)
    # A file saved from cnnkit itself already has our keys; anything else is in the source's layout.
    if set(state_dict) != set(model.state_dict()):
        state_dict = convert_state_dict(weights.model, state_dict, source=weights.source)
    load_state_dict_strict(model, state_dict, source=str(path))


def load(
    name: str,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = "cpu",
) -> Pretrained:
    """A registered model with pretrained ImageNet weights, ready to ``predict``.

    ``weights``: None for the registered file (see ``cnnkit.pretrained.weights``), or the path of a
    checkpoint in the registered layout (e.g. a torchvision ``resnet50-*.pth``) or in ours.
    """
    spec = get_weights(name)
    model = create_model(spec.model, num_classes=spec.num_classes)
    load_weights(model, spec, weights)
    model.eval().to(pick_device(device))
    ids, names = zip(*imagenet_classes(), strict=True)
    return Pretrained(model, spec.preprocess, list(ids), list(names), spec)
