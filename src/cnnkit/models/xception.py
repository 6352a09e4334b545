"""Xception (Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", CVPR 2017),
laid out as Keras' ``keras.applications.Xception``, the model the notes load.

Entry flow: two 3×3 convs ('valid', the first stride 2), then three blocks of two separable 3×3 convs
and a 3×3/2 max pool, each with a 1×1 stride-2 conv + BN on the residual path (128, 256, 728 maps).
Middle flow: eight repeats of three ReLU → separable conv 728 → BN with an identity shortcut. Exit flow:
one more downsampling block (728, 1024), separable convs 1536 and 2048, global average pooling and the
dense output. All convolutions are bias-free and followed by batch normalization.
22,855,952 trainable parameters with the 1000-class top, Keras' trainable count (its total,
22,910,480, adds the BatchNorm moving statistics, which are buffers here).

Deliberate differences: BatchNorm uses Keras' ``epsilon=1e-3`` (PyTorch's default is 1e-5) so Keras'
weights would give Keras' outputs; softmax is left to the loss; the smallest input is 71×71, as Keras.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.layers.conv import Conv2d, SeparableConv2d
from cnnkit.layers.pool import MaxPool2d
from cnnkit.models.features import make_feature_info
from cnnkit.models.registry import register_model

BN_EPS = 1e-3  # Keras' BatchNormalization default


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


def _sep_bn(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        SeparableConv2d(in_channels, out_channels, 3, padding="same", bias=False),
        _bn(out_channels),
    ]


class XceptionBlock(nn.Module):
    """``len(widths)`` × (ReLU → separable 3×3 → BN) [→ 3×3/2 max pool], plus a shortcut: a 1×1
    stride-2 conv + BN when the block downsamples, else the identity.

    ``first_relu=False`` leaves out the leading ReLU (Keras' block 2, whose input is already
    activated). The ReLUs are not in place: the shortcut reads the block's input.
    """

    def __init__(
        self, in_channels: int, widths: tuple[int, ...], downsample: bool, first_relu: bool = True
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width_in = in_channels
        for index, width in enumerate(widths):
            if index > 0 or first_relu:
                layers.append(nn.ReLU())
            layers += _sep_bn(width_in, width)
            width_in = width
        if downsample:
            layers.append(MaxPool2d(3, 2, padding="same"))
            self.shortcut: nn.Module = nn.Sequential(
                Conv2d(in_channels, width_in, 1, stride=2, padding="same", bias=False),
                _bn(width_in),
            )
        else:
            self.shortcut = nn.Identity()
        self.residual = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)  # N x widths[-1] x H/s x W/s


class Xception(nn.Module):
    """Input (N, in_channels, H, W), H, W >= 71; output (N, num_classes), (N, 2048) pooled features
    when ``num_classes=0``, or with ``features_only=True`` the maps at strides 2 (stem), 4, 8, 16
    (end of the middle flow) and 32 (end of the exit flow) (``feature_info``), the classifier then
    not built."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        middle_repeats: int = 8,
        features_only: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features_only = features_only
        self.stem = nn.Sequential(
            Conv2d(in_channels, 32, 3, stride=2, padding="valid", bias=False),
            _bn(32),
            nn.ReLU(inplace=True),
            Conv2d(32, 64, 3, padding="valid", bias=False),
            _bn(64),
            nn.ReLU(inplace=True),
        )
        self.entry2 = XceptionBlock(64, (128, 128), downsample=True, first_relu=False)
        self.entry3 = XceptionBlock(128, (256, 256), downsample=True)
        self.entry4 = XceptionBlock(256, (728, 728), downsample=True)
        self.middle = nn.Sequential(
            *(XceptionBlock(728, (728, 728, 728), downsample=False) for _ in range(middle_repeats))
        )
        self.exit = nn.Sequential(
            XceptionBlock(728, (728, 1024), downsample=True),
            *_sep_bn(1024, 1536),
            nn.ReLU(inplace=True),
            *_sep_bn(1536, 2048),
            nn.ReLU(inplace=True),
        )
        self.feature_channels = [64, 128, 256, 728, 2048]
        self.feature_strides = [2, 4, 8, 16, 32]
        self.feature_info = make_feature_info(
            self.feature_channels,
            self.feature_strides,
            ["stem", "entry2", "entry3", "middle", "exit"],
        )
        self.num_features = 2048
        with_fc = num_classes > 0 and not features_only
        self.fc = nn.Linear(2048, num_classes) if with_fc else nn.Identity()

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x1 = self.stem(x)  # N x 64 x 147 x 147 (at 299 x 299)
        x2 = self.entry2(x1)  # N x 128 x 74 x 74
        x3 = self.entry3(x2)  # N x 256 x 37 x 37
        x4 = self.middle(self.entry4(x3))  # N x 728 x 19 x 19
        x5 = self.exit(x4)  # N x 2048 x 10 x 10
        return [x1, x2, x3, x4, x5]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_stages(x)
        return self.fc(self.forward_features(x).mean(dim=(2, 3)))  # N x num_classes


@register_model(
    input_size=(3, 299, 299),
    min_size=71,
    classifier="fc",
    paper="Chollet, Xception: Deep Learning with Depthwise Separable Convolutions, CVPR 2017",
)
def xception(
    num_classes: int = 1000, in_channels: int = 3, features_only: bool = False
) -> Xception:
    """Xception (22,855,952 trainable parameters at 1000 classes, as Keras counts them)."""
    return Xception(num_classes, in_channels, features_only=features_only)
