"""Upscale photos: cnnkit's shipped super-resolution weights (×2, ×4), or any ``superres`` model.

>>> from cnnkit.pretrained.superres import load_superres, upscale
>>> model = load_superres(scale=2)                 # shipped weights, sha256 verified
>>> big = upscale(model, image)                     # uint8 (3, H, W) → uint8 (3, 2H, 2W)

The model upscales the luminance Y (ITU-R BT.601, ``cnnkit.data.superres.rgb_to_ycbcr``); the
chroma Cb and Cr, which the eye resolves far less finely, are upscaled by PIL's bicubic
(``cnnkit.layers.upsample.bicubic_resize``), as the SR papers do. Large images go through the
model in overlapping tiles (:func:`upscale_y`), which gives the same pixels as one pass.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from cnnkit.data.superres import rgb_to_ycbcr, ycbcr_to_rgb
from cnnkit.io import verify_sha256
from cnnkit.layers.upsample import bicubic_resize
from cnnkit.models import create_model
from cnnkit.models.checkpoints import load_state_dict_strict
from cnnkit.pretrained.weights import SuperResWeights, read_state_dict, superres_weights

#: low-resolution tile side and the least context kept around each tile; a model's own
#: ``receptive_radius`` (ESPCN 4 px, FSRCNN 8 px at ×2, EDSR 2·blocks + 3 px; bicubic 2 px)
#: raises it, so that tiles agree with one pass
TILE, MARGIN = 256, 16


def load_superres(
    scale: int = 2,
    *,
    weights: SuperResWeights | None = None,
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The shipped super-resolution model for ``scale`` (2 or 4), in eval mode.

    The package's file is verified against the registry's sha256 first (a mismatch is a
    ``ValueError`` naming the file and both digests). ``weights`` replaces the registry entry;
    ``path`` reads another file in the same layout (not verified: a re-trained or converted copy).
    """
    entry = weights or superres_weights(scale)
    file = entry.path if path is None else path
    if path is None:
        if not entry.path.is_file():
            raise FileNotFoundError(
                f"weights {entry.name}: {entry.path} is missing from the installed package"
            )
        verify_sha256(file, entry.sha256)
    model = create_model(
        entry.model, num_classes=1, in_channels=1, scale=entry.scale, **entry.options
    )
    load_state_dict_strict(model, read_state_dict(file), source=str(file))
    return model.eval().to(device)


@torch.no_grad()
def upscale_y(
    model: nn.Module, y: torch.Tensor, tile: int = TILE, margin: int = MARGIN
) -> torch.Tensor:
    """Y (N, 1, h, w) through ``model`` → (N, 1, s·h, s·w), clamped to [0, 1]; in tiles of
    ``tile`` low-resolution pixels with at least ``margin`` pixels of context each (more if the
    model's ``receptive_radius`` is larger), so memory stays bounded for any image and the result
    is one pass's."""
    scale = int(getattr(model, "scale", 0))
    if scale < 1:
        raise ValueError(f"upscale_y: {type(model).__name__} has no integer 'scale' attribute")
    margin = max(margin, int(getattr(model, "receptive_radius", 0)))
    param = next(model.parameters(), None)  # none: an ONNX graph run by onnxruntime (CPU)
    y = y.to(param.device, param.dtype) if param is not None else y.float().cpu()
    height, width = y.shape[-2:]
    if height <= tile + 2 * margin and width <= tile + 2 * margin:
        return model(y).clamp(0, 1)
    out = y.new_empty(*y.shape[:-2], height * scale, width * scale)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            t0, l0 = max(top - margin, 0), max(left - margin, 0)
            t1, l1 = min(bottom + margin, height), min(right + margin, width)
            piece = model(y[..., t0:t1, l0:l1])  # N x 1 x s·(t1-t0) x s·(l1-l0)
            out[..., scale * top : scale * bottom, scale * left : scale * right] = piece[
                ...,
                scale * (top - t0) : scale * (bottom - t0),
                scale * (left - l0) : scale * (right - l0),
            ]
    return out.clamp(0, 1)


def upscale(model: nn.Module, image: torch.Tensor, tile: int = TILE) -> torch.Tensor:
    """A uint8 image (3 or 1, H, W) upscaled by the model's scale → uint8 RGB (3, s·H, s·W): Y by
    the model, Cb and Cr by bicubic interpolation, back to RGB, rounded."""
    if image.dtype != torch.uint8 or image.dim() != 3:
        raise ValueError(
            f"upscale: expected a uint8 image (C, H, W), got {image.dtype} {tuple(image.shape)}"
        )
    scale = int(getattr(model, "scale", 0))
    ycbcr = rgb_to_ycbcr(image)[None]  # 1 x 3 x H x W
    size = (image.shape[1] * scale, image.shape[2] * scale)
    y = upscale_y(model, ycbcr[:, :1], tile).float().cpu()  # 1 x 1 x sH x sW
    chroma = bicubic_resize(ycbcr[:, 1:], size)  # 1 x 2 x sH x sW
    rgb = ycbcr_to_rgb(torch.cat([y, chroma], 1))[0]
    return rgb.clamp(0, 1).mul(255).round().to(torch.uint8)
