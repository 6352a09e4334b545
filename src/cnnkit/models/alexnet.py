"""AlexNet (Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", NeurIPS 2012), as the notes' table lays it out (Géron, ch. 14, table 14-2).

| layer | type      | maps | size    | kernel | stride | padding | activation |
|-------|-----------|------|---------|--------|--------|---------|------------|
| Out   | dense     | –    | 1000    | –      | –      | –       | softmax    |
| F10   | dense     | –    | 4096    | –      | –      | –       | ReLU       |
| F9    | dense     | –    | 4096    | –      | –      | –       | ReLU       |
| S8    | max pool  | 256  | 6×6     | 3×3    | 2      | valid   | –          |
| C7    | conv      | 256  | 13×13   | 3×3    | 1      | same    | ReLU       |
| C6    | conv      | 384  | 13×13   | 3×3    | 1      | same    | ReLU       |
| C5    | conv      | 384  | 13×13   | 3×3    | 1      | same    | ReLU       |
| S4    | max pool  | 256  | 13×13   | 3×3    | 2      | valid   | –          |
| C3    | conv      | 256  | 27×27   | 5×5    | 1      | same    | ReLU       |
| S2    | max pool  | 96   | 27×27   | 3×3    | 2      | valid   | –          |
| C1    | conv      | 96   | 55×55   | 11×11  | 4      | valid   | ReLU       |
| In    | input     | 3    | 227×227 | –      | –      | –       | –          |

LRN (depth_radius 2, bias 2, alpha 1e-4, beta 0.75, TensorFlow's convention as the notes write it)
follows the ReLU of C1 and C3; dropout 0.5 on the outputs of F9 and F10. 62,378,344 parameters at
1000 classes on one tower; ``groups=2`` restores the paper's two-GPU split, where C3, C6 and C7 see
only the maps of their own GPU: 60,965,224.

Deliberate differences: an adaptive average pool to 6×6 before F9 (torchvision's), so inputs from
67×67 up work (the identity at 227×227); the paper's two towers are otherwise one (a grouped conv is
the same computation); softmax is left to the loss.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.layers.conv import Conv2d
from cnnkit.layers.norm import LocalResponseNorm
from cnnkit.layers.pool import MaxPool2d
from cnnkit.models.features import make_feature_info
from cnnkit.models.registry import register_model


def _lrn() -> LocalResponseNorm:
    return LocalResponseNorm(depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)


class AlexNet(nn.Module):
    """Input (N, in_channels, H, W), H, W >= 67; output (N, num_classes), (N, 4096) features of F10
    when ``num_classes=0``, or with ``features_only=True`` the maps after C1 (stride 4), C3 (8),
    C7 (16) and S8 (32) (``feature_info``), F9, F10 and the classifier then not built."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        groups: int = 1,
        dropout: float = 0.5,
        features_only: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features_only = features_only
        self.c1 = Conv2d(in_channels, 96, 11, stride=4, padding="valid", activation="relu")
        self.lrn1 = _lrn()
        self.s2 = MaxPool2d(3, 2, padding="valid")
        self.c3 = Conv2d(96, 256, 5, padding="same", groups=groups, activation="relu")
        self.lrn3 = _lrn()
        self.s4 = MaxPool2d(3, 2, padding="valid")
        self.c5 = Conv2d(256, 384, 3, padding="same", activation="relu")
        self.c6 = Conv2d(384, 384, 3, padding="same", groups=groups, activation="relu")
        self.c7 = Conv2d(384, 256, 3, padding="same", groups=groups, activation="relu")
        self.s8 = MaxPool2d(3, 2, padding="valid")
        self.feature_channels = [96, 256, 256, 256]
        self.feature_strides = [4, 8, 16, 32]
        self.feature_info = make_feature_info(
            self.feature_channels, self.feature_strides, ["lrn1", "lrn3", "c7", "s8"]
        )
        self.pool = nn.AdaptiveAvgPool2d(6)
        # F9, F10 and the output layer serve classification only: a feature extractor drops them.
        self.f9: nn.Module = nn.Identity() if features_only else nn.Linear(256 * 6 * 6, 4096)
        self.f10: nn.Module = nn.Identity() if features_only else nn.Linear(4096, 4096)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.num_features = 4096
        with_fc = num_classes > 0 and not features_only
        self.fc = nn.Linear(4096, num_classes) if with_fc else nn.Identity()

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x1 = self.lrn1(self.c1(x))  # N x 96 x 55 x 55 (at 227 x 227)
        x2 = self.lrn3(self.c3(self.s2(x1)))  # N x 256 x 27 x 27
        x3 = self.c7(self.c6(self.c5(self.s4(x2))))  # N x 256 x 13 x 13
        x4 = self.s8(x3)  # N x 256 x 6 x 6
        return [x1, x2, x3, x4]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_stages(x)
        x = self.pool(self.forward_features(x)).flatten(1)  # N x 9216
        x = self.dropout(self.act(self.f9(x)))  # N x 4096
        x = self.dropout(self.act(self.f10(x)))  # N x 4096
        return self.fc(x)


@register_model(
    input_size=(3, 227, 227),
    min_size=67,
    classifier="fc",
    paper="Krizhevsky et al., ImageNet Classification with Deep CNNs, NeurIPS 2012",
)
def alexnet(
    num_classes: int = 1000,
    in_channels: int = 3,
    groups: int = 1,
    dropout: float = 0.5,
    features_only: bool = False,
) -> AlexNet:
    """AlexNet (62,378,344 parameters at 1000 classes; 60,965,224 with ``groups=2``)."""
    return AlexNet(num_classes, in_channels, groups, dropout, features_only)
