"""DeepLab-style atrous spatial pyramid pooling (Chen, Papandreou, Schroff & Adam, "Rethinking Atrous
Convolution for Semantic Image Segmentation" (DeepLabv3), arXiv:1706.05587, 2017, §3.3; the ASPP of
Chen et al., "DeepLab", TPAMI 2018).

A dilated backbone (ResNet with ``dilated=True``: output stride 8) feeds the ASPP head: in parallel,
a 1×1 convolution, three 3×3 convolutions dilated by ``atrous_rates``, and image-level features
(global average pool → 1×1 convolution, spread back over the map), each with ``channels`` maps; their
concatenation goes through a 1×1 convolution (BN, ReLU, dropout) and a 1×1 classifier, and the scores
are upsampled bilinearly to the input size.

Contract: input (N, in_channels, H, W); output (N, num_classes, H, W) logits at the input size.

Deliberate differences from DeepLabv3:
- atrous rates (3, 6, 9) instead of (12, 24, 36) at output stride 8: the paper's rates are about 0.2,
  0.4 and 0.55 of its 65×65 maps (513×513 crops); cnnkit's 128×128 images give 16×16 maps, where a
  rate of 12 or more leaves only the centre tap inside the map, the degenerate case the paper's §3.3
  warns of. The same fractions of 16 are 3, 6 and 9;
- 128 channels per branch instead of 256 (a ResNet-18 backbone has 512 maps, not ResNet-50's 2048);
- no batch normalization in the image-pooling branch, so that a batch of one trains (BN of one value
  per channel is undefined); its convolution has a bias instead;
- ResNet-18 by default, any zoo backbone allowed (``dilated=False`` for non-ResNets).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.layers.conv import Conv2d
from cnnkit.models.features import create_backbone
from cnnkit.models.registry import register_model


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        Conv2d(
            in_channels, out_channels, kernel_size, padding="same", dilation=dilation, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: (N, in_channels, h, w) → (N, channels, h, w)."""

    def __init__(
        self,
        in_channels: int,
        channels: int = 128,
        atrous_rates: Sequence[int] = (3, 6, 9),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, channels, 1)]
            + [_conv_bn_relu(in_channels, channels, 3, rate) for rate in atrous_rates]
        )
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True)
        )
        self.project = nn.Sequential(
            _conv_bn_relu((len(atrous_rates) + 2) * channels, channels, 1), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        outputs = [branch(x) for branch in self.branches]  # each N x channels x h x w
        # bilinear upsampling of a 1×1 map is a copy to every cell
        outputs.append(self.image_pool(x).expand(-1, -1, height, width))
        return self.project(torch.cat(outputs, dim=1))  # N x channels x h x w


class DeepLab(nn.Module):
    """A (dilated) backbone's last stage → ASPP → 1×1 classifier → bilinear upsampling."""

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        backbone: str = "resnet18",
        dilated: bool = True,
        atrous_rates: Sequence[int] = (3, 6, 9),
        channels: int = 128,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        options = {"dilated": True} if dilated else {}
        self.backbone, self.feature_info = create_backbone(backbone, in_channels, **options)
        self.num_classes = num_classes
        self.aspp = ASPP(self.feature_info[-1]["channels"], channels, atrous_rates, dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)[-1]  # N x C x H/8 x W/8 (dilated ResNet)
        scores = self.classifier(self.aspp(features))  # N x K x H/8 x W/8
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model(
    input_size=(3, 513, 513),
    min_size=32,
    classifier="classifier",
    paper="Chen et al., Rethinking Atrous Convolution for Semantic Image Segmentation "
    "(DeepLabv3), arXiv:1706.05587, 2017",
    task="segment",
)
def deeplab(
    num_classes: int = 21,
    in_channels: int = 3,
    backbone: str = "resnet18",
    dilated: bool = True,
    atrous_rates: tuple[int, ...] = (3, 6, 9),
    channels: int = 128,
    dropout: float = 0.5,
) -> DeepLab:
    """DeepLabv3-style ASPP head on a dilated backbone (output stride 8 with ResNets)."""
    return DeepLab(num_classes, in_channels, backbone, dilated, atrous_rates, channels, dropout)
