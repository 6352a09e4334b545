"""Feature maps of a model's convolution layers for one image (the notes' first picture, on a
trained network): which layers there are, their outputs through forward hooks, and a grid image.
PNG encoding and data URIs for the HTML report and the browser app live here too."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import torch
from torch import nn


def conv_layers(model: nn.Module) -> list[str]:
    """The names of the model's ``nn.Conv2d`` modules, in the order they were registered (for the
    registry's models, the order of the forward pass)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


@torch.no_grad()
def capture(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The outputs of the modules ``names`` (forward hooks) for the batch ``x``, in eval mode."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"no layer {missing[0]!r}; the convolution layers: {conv_layers(model)}")
    maps: dict[str, torch.Tensor] = {}
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: maps.__setitem__(name, out.detach().float().cpu())
        )
        for name in names
    ]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return maps


def maps_grid(maps: torch.Tensor, limit: int = 16, side: int = 64) -> torch.Tensor:
    """One image's maps (C, H, W) → a uint8 grey grid (3, H', W') of the first ``limit`` channels,
    each scaled to its own min-max range and enlarged (nearest) to about ``side`` pixels."""
    from torchvision.utils import make_grid

    maps = maps[:limit].float()
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    scaled = (maps - low) / (high - low).clamp(min=1e-12)
    factor = max(1, side // max(maps.shape[-2:]))
    scaled = scaled.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
    grid = make_grid(scaled.unsqueeze(1), nrow=8, padding=2, pad_value=1.0)
    return (grid * 255).round().to(torch.uint8)


def png_bytes(image: torch.Tensor) -> bytes:
    """uint8 (C, H, W) → PNG bytes (Pillow)."""
    from PIL import Image

    array = image.permute(1, 2, 0).contiguous().numpy()
    pil = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI, for a page that needs no other file and no network."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
