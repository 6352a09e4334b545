"""U-Net (Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015).

A contracting path of ``depth`` + 1 levels — two 3×3 convolutions with ReLU per level, a 2×2 max pool
between levels, the width doubling at each (64 … 1024 in the paper) — and an expanding path that at
each level upsamples with a 2×2 stride-2 transposed convolution ("up-convolution") halving the width,
concatenates the contracting path's map of the same level ("copy and crop"), and applies two 3×3
convolutions with ReLU; a 1×1 convolution gives the class scores.

Contract: input (N, in_channels, H, W) of any size (odd sizes included); output (N, num_classes, H, W)
logits at the input size. The input is padded to a multiple of 2**depth by mirroring (the paper's
overlap-tile extrapolation; edge replication when the input is too small to mirror) and the output
cropped back, so every skip concatenation sees equal sizes.

Deliberate differences from the paper:
- 'same' padding instead of unpadded ('valid') convolutions: the output covers the whole input rather
  than a 388×388 centre of a 572×572 tile, and the skips need no cropping;
- batch normalization after each 3×3 convolution (``batch_norm=True``, the convolutions then without
  bias; the paper predates BN, ``batch_norm=False`` restores it);
- ``base_width`` 16 by default (the paper's 64 gives 31 M parameters, too slow for CPU training on
  128×128 images); ``base_width=64, batch_norm=False`` is the paper's network;
- He-normal initialization, as the paper (§3: std sqrt(2/N), N the inputs of a neuron); with
  ``class_prior`` (each class's share of the training pixels; ``cnnkit train`` passes the training
  masks') the head's biases start at its logarithm, so the first prediction is the class
  frequencies rather than a random class (Lin et al. 2017's prior initialization; without it, on
  scenes that are 74% background, a base-width-8 U-Net stayed near chance from some seeds).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.layers.conv import Conv2d
from cnnkit.models.registry import register_model


class DoubleConv(nn.Sequential):
    """Two 3×3 'same' convolutions, each followed by [BN and] ReLU: (N, in, H, W) → (N, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        layers: list[nn.Module] = []
        for index in range(2):
            width_in = in_channels if index == 0 else out_channels
            layers.append(Conv2d(width_in, out_channels, 3, padding="same", bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def init_prior_bias(layer: nn.Conv2d, class_prior: Sequence[float]) -> None:
    """Set ``layer``'s biases to the log of ``class_prior`` (floored at 1e-4, so that a class
    absent from the training masks does not get -inf)."""
    if layer.bias is None or len(class_prior) != layer.out_channels:
        raise ValueError(
            f"class_prior: expected {layer.out_channels} class frequencies, got {len(class_prior)}"
        )
    prior = torch.tensor([float(p) for p in class_prior], dtype=layer.bias.dtype)
    if not torch.isfinite(prior).all() or (prior < 0).any():
        raise ValueError(f"class_prior: expected frequencies >= 0, got {list(class_prior)}")
    with torch.no_grad():
        layer.bias.copy_(prior.clamp_min(1e-4).log())


class UNet(nn.Module):
    """U-Net with ``depth`` poolings; level i has ``base_width · 2**i`` maps.

    ``encoder[i]`` is level i of the contracting path, ``up[i]`` and ``decoder[i]`` bring level
    i + 1 back to level i; ``head`` is the final 1×1 convolution.
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 1,
        base_width: int = 16,
        depth: int = 4,
        batch_norm: bool = True,
        class_prior: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if depth < 1 or base_width < 1 or num_classes < 1:
            raise ValueError(
                f"UNet: depth={depth}, base_width={base_width}, num_classes={num_classes}; "
                "expected each at least 1"
            )
        self.num_classes, self.depth = num_classes, depth
        widths = [base_width * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList(
            DoubleConv(in_channels if level == 0 else widths[level - 1], widths[level], batch_norm)
            for level in range(depth + 1)
        )
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2)
            for level in range(depth)
        )
        self.decoder = nn.ModuleList(
            DoubleConv(2 * widths[level], widths[level], batch_norm) for level in range(depth)
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if class_prior is not None:
            init_prior_bias(self.head, class_prior)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        top, left = pad_h // 2, pad_w // 2
        pads = (left, pad_w - left, top, pad_h - top)
        if pad_h or pad_w:
            mirror = pad_h < height and pad_w < width  # reflect needs the pad below the size
            x = F.pad(x, pads, mode="reflect" if mirror else "replicate")
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))  # N x widths[level] x H/2^l x W/2^l
            skips.append(x)
        x = skips.pop()
        for level in reversed(range(self.depth)):
            x = self.up[level](x)  # N x widths[level] x H/2^level x W/2^level
            x = self.decoder[level](torch.cat([skips[level], x], dim=1))
        x = self.head(x)  # N x num_classes x padded H x padded W
        return x[..., top : top + height, left : left + width]


@register_model(
    input_size=(1, 572, 572),
    min_size=1,
    classifier="head",
    paper="Ronneberger, Fischer & Brox, U-Net: Convolutional Networks for Biomedical Image "
    "Segmentation, MICCAI 2015",
    task="segment",
)
def unet(
    num_classes: int = 2,
    in_channels: int = 1,
    base_width: int = 16,
    depth: int = 4,
    batch_norm: bool = True,
    class_prior: Sequence[float] | None = None,
) -> UNet:
    """U-Net; ``base_width=64, batch_norm=False`` is the paper's network (2 classes, 1 channel).
    ``class_prior``: the head's biases start at the log of these class frequencies."""
    return UNet(num_classes, in_channels, base_width, depth, batch_norm, class_prior)
