"""VGG (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015), configurations D (VGG-16) and E (VGG-19) of the paper's table 1.

Five stages of 3×3 stride-1 'same' convolutions with ReLU, each closed by a 2×2 stride-2 max pool, then
two hidden dense layers of 4096 with dropout 0.5 and the output layer: 138,357,544 (VGG-16) and
143,667,240 (VGG-19) parameters at 1000 classes, equal to torchvision's ``vgg16``/``vgg19``, whose
weights load through ``cnnkit.models.checkpoints``.

Deliberate differences from the paper, both torchvision's: an adaptive average pool to 7×7 before the
dense layers, so any input from 32×32 up works (it is the identity at the paper's 224×224); and the
paper's test-time "dense evaluation" (dense layers turned into convolutions) is left out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from cnnkit.layers.conv import Conv2d
from cnnkit.layers.pool import MaxPool2d
from cnnkit.models.features import make_feature_info
from cnnkit.models.registry import register_model

# Convolutions per stage; the widths are 64, 128, 256, 512, 512 for every configuration.
VGG_CONFIGS: dict[str, tuple[int, ...]] = {
    "vgg16": (2, 2, 3, 3, 3),  # configuration D
    "vgg19": (2, 2, 4, 4, 4),  # configuration E
}
VGG_WIDTHS = (64, 128, 256, 512, 512)


class VGG(nn.Module):
    """Input (N, in_channels, H, W), H, W >= 32; output (N, num_classes), (N, 4096) pooled features
    when ``num_classes=0`` (the second hidden dense layer, timm's ``pre_logits``), or with
    ``features_only=True`` the five stage outputs, each after its max pool (strides 2, 4, 8, 16, 32;
    ``feature_info``), the dense layers then not built.
    """

    def __init__(
        self,
        stage_depths: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.5,
        features_only: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features_only = features_only
        stages, width_in = [], in_channels
        for depth, width in zip(stage_depths, VGG_WIDTHS, strict=True):
            layers: list[nn.Module] = []
            for _ in range(depth):
                layers.append(Conv2d(width_in, width, 3, padding="same", activation="relu"))
                width_in = width
            layers.append(MaxPool2d(2, 2))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.feature_channels = list(VGG_WIDTHS)
        self.feature_strides = [2, 4, 8, 16, 32]
        self.feature_info = make_feature_info(
            self.feature_channels, self.feature_strides, [f"stages.{i}" for i in range(5)]
        )
        self.pool = nn.AdaptiveAvgPool2d(7)
        # The dense layers serve classification only: a feature extractor drops them.
        self.pre_logits = (
            nn.Identity()
            if features_only
            else nn.Sequential(
                OrderedDict(
                    fc1=nn.Linear(512 * 7 * 7, 4096),
                    act1=nn.ReLU(inplace=True),
                    drop1=nn.Dropout(dropout),
                    fc2=nn.Linear(4096, 4096),
                    act2=nn.ReLU(inplace=True),
                    drop2=nn.Dropout(dropout),
                )
            )
        )
        self.num_features = 4096
        with_fc = num_classes > 0 and not features_only
        self.fc = nn.Linear(4096, num_classes) if with_fc else nn.Identity()

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before pooling: N x 512 x H/32 x W/32."""
        return self.stages(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_stages(x)
        x = self.pool(self.forward_features(x)).flatten(1)  # N x 25088
        return self.fc(self.pre_logits(x))  # N x num_classes


_PAPER = "Simonyan & Zisserman, Very Deep Convolutional Networks, ICLR 2015"


@register_model(input_size=(3, 224, 224), min_size=32, classifier="fc", paper=_PAPER)
def vgg16(
    num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, features_only: bool = False
) -> VGG:
    """VGG-16, configuration D (138,357,544 parameters at 1000 classes)."""
    return VGG(VGG_CONFIGS["vgg16"], num_classes, in_channels, dropout, features_only)


@register_model(input_size=(3, 224, 224), min_size=32, classifier="fc", paper=_PAPER)
def vgg19(
    num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, features_only: bool = False
) -> VGG:
    """VGG-19, configuration E (143,667,240 parameters at 1000 classes)."""
    return VGG(VGG_CONFIGS["vgg19"], num_classes, in_channels, dropout, features_only)
