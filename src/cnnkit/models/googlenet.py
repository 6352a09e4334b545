"""GoogLeNet (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015) and SE-Inception
(Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, fig. 2, applied to GoogLeNet's modules).

The stem (7×7/2 conv, 3×3/2 max pool, LRN, 1×1 conv 64, 3×3 conv 192, LRN, 3×3/2 max pool), the nine
inception modules of the paper's table 1 (3a … 5b, max pools after 3b and 4e), global average pooling,
dropout 0.4 and the dense output. Every conv has a bias and ReLU and no batch normalization, as in the
paper. The auxiliary classifiers on 4a and 4d (5×5/3 average pool, 1×1 conv 128, dense 1024, dropout
0.7, dense output) run in training mode only; the model then returns ``(logits, aux1, aux2)`` and the
trainer weights each auxiliary loss 0.3.

Parameters at 1000 classes: 6,998,552 without the auxiliary classifiers, 13,378,280 with them, the
count of the original Caffe model (``bvlc_googlenet``). torchvision's ``googlenet`` differs (batch
normalization, a 3×3 conv in the "5×5" branch), so its weights do not apply.

Deliberate differences:
- padding is TensorFlow's 'same' throughout (the notes' "+2(S)"), which gives the paper's sizes
  224 → 112 → 56 → 28 → 14 → 7;
- LRN uses Caffe's settings (size 5, alpha 1e-4, beta 0.75, k 1), i.e. depth_radius 2 and
  alpha 1e-4 / 5 in TensorFlow's convention, since Caffe divides alpha by the window size;
- each auxiliary head ends its pooling with an adaptive average pool to 4×4 (the identity at 224×224,
  where the 5×5/3 pool already gives 4×4), so it works on inputs from 65×65 up; the main path works
  on any size.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.layers.blocks import InceptionModule
from cnnkit.layers.conv import Conv2d
from cnnkit.layers.norm import LocalResponseNorm
from cnnkit.layers.pool import AvgPool2d, MaxPool2d
from cnnkit.models.features import make_feature_info
from cnnkit.models.registry import register_model

# The paper's table 1: (name, #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj).
INCEPTION_CONFIG = (
    ("3a", 64, 96, 128, 16, 32, 32),
    ("3b", 128, 128, 192, 32, 96, 64),
    ("4a", 192, 96, 208, 16, 48, 64),
    ("4b", 160, 112, 224, 24, 64, 64),
    ("4c", 128, 128, 256, 24, 64, 64),
    ("4d", 112, 144, 288, 32, 64, 64),
    ("4e", 256, 160, 320, 32, 128, 128),
    ("5a", 256, 160, 320, 32, 128, 128),
    ("5b", 384, 192, 384, 48, 128, 128),
)
_POOL_AFTER = {"3b", "4e"}  # 3×3/2 max pools between the module groups
_AUX_AFTER = {"4a": "aux1", "4d": "aux2"}


def _lrn() -> LocalResponseNorm:
    return LocalResponseNorm(depth_radius=2, bias=1.0, alpha=1e-4 / 5, beta=0.75)


class InceptionAux(nn.Module):
    """An auxiliary classifier (paper §5): (N, C, 14, 14) at 224×224 → (N, num_classes)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.pool = AvgPool2d(5, 3, padding="valid")
        self.conv = Conv2d(in_channels, 128, 1, activation="relu")
        self.resize = nn.AdaptiveAvgPool2d(4)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resize(self.conv(self.pool(x)))  # N x 128 x 4 x 4
        x = self.dropout(self.act(self.fc1(x.flatten(1))))  # N x 1024
        return self.fc2(x)


class GoogLeNet(nn.Module):
    """Input (N, in_channels, H, W); output (N, num_classes) logits in eval mode, ``(logits, aux1,
    aux2)`` in training mode with auxiliary classifiers, (N, 1024) pooled features when
    ``num_classes=0``, or with ``features_only=True`` the maps at strides 2 (conv1), 4 (conv3),
    8 (3b), 16 (4e) and 32 (5b) (``feature_info``); a feature extractor builds neither the
    classifier nor the auxiliary classifiers.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_classifiers: bool = True,
        se_ratio: int | None = None,
        dropout: float = 0.4,
        aux_dropout: float = 0.7,
        features_only: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features_only = features_only
        self.conv1 = Conv2d(in_channels, 64, 7, stride=2, padding="same", activation="relu")
        self.pool1 = MaxPool2d(3, 2, padding="same")
        self.lrn1 = _lrn()
        self.conv2 = Conv2d(64, 64, 1, activation="relu")  # the 1×1 bottleneck
        self.conv3 = Conv2d(64, 192, 3, padding="same", activation="relu")
        self.lrn2 = _lrn()
        self.pool2 = MaxPool2d(3, 2, padding="same")

        modules, width = {}, 192
        for name, c1, c3_reduce, c3, c5_reduce, c5, pool_proj in INCEPTION_CONFIG:
            module = InceptionModule(
                width, c1, c3_reduce, c3, c5_reduce, c5, pool_proj, se_ratio=se_ratio
            )
            modules[f"inception{name}"] = module
            width = module.out_channels
        self.inception = nn.ModuleDict(modules)
        self.pool3 = MaxPool2d(3, 2, padding="same")
        self.pool4 = MaxPool2d(3, 2, padding="same")
        self.feature_channels = [64, 192, 480, 832, 1024]
        self.feature_strides = [2, 4, 8, 16, 32]
        self.feature_info = make_feature_info(
            self.feature_channels,
            self.feature_strides,
            [
                "conv1",
                "conv3",
                "inception.inception3b",
                "inception.inception4e",
                "inception.inception5b",
            ],
        )

        with_head = num_classes > 0 and not features_only
        with_aux = aux_classifiers and with_head
        self.aux1 = InceptionAux(512, num_classes, aux_dropout) if with_aux else None
        self.aux2 = InceptionAux(528, num_classes, aux_dropout) if with_aux else None
        self.num_features = width
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes) if with_head else nn.Identity()

    def _run(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Stage maps and auxiliary logits (the latter only in training mode)."""
        x = self.conv1(x)  # N x 64 x 112 x 112 (at 224 x 224)
        maps = [x]
        x = self.conv3(self.conv2(self.lrn1(self.pool1(x))))  # N x 192 x 56 x 56
        maps.append(x)
        x = self.pool2(self.lrn2(x))  # N x 192 x 28 x 28
        aux: list[torch.Tensor] = []
        for key, module in self.inception.items():
            x = module(x)  # 3a, 3b: N x 480 x 28 x 28; 4a-4e: 14 x 14; 5a, 5b: N x 1024 x 7 x 7
            name = key.removeprefix("inception")
            if name in _AUX_AFTER and self.aux1 is not None and self.training:
                aux.append(getattr(self, _AUX_AFTER[name])(x))  # N x num_classes
            if name in _POOL_AFTER:
                maps.append(x)
                x = self.pool3(x) if name == "3b" else self.pool4(x)
        maps.append(x)
        return maps, aux

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._run(x)[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before pooling: N x 1024 x H/32 x W/32."""
        return self._run(x)[0][-1]

    def forward(
        self, x: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]:
        if self.features_only:
            return self.forward_stages(x)
        maps, aux = self._run(x)
        logits = self.fc(self.dropout(maps[-1].mean(dim=(2, 3))))  # N x num_classes
        return (logits, *aux) if aux else logits


_PAPER = "Szegedy et al., Going Deeper with Convolutions, CVPR 2015"


@register_model(input_size=(3, 224, 224), min_size=65, classifier="fc", paper=_PAPER)
def googlenet(
    num_classes: int = 1000,
    in_channels: int = 3,
    aux_classifiers: bool = True,
    dropout: float = 0.4,
    features_only: bool = False,
) -> GoogLeNet:
    """GoogLeNet (13,378,280 parameters at 1000 classes; 6,998,552 with ``aux_classifiers=False``)."""
    return GoogLeNet(
        num_classes, in_channels, aux_classifiers, dropout=dropout, features_only=features_only
    )


@register_model(
    input_size=(3, 224, 224),
    min_size=65,
    classifier="fc",
    paper="Hu et al., Squeeze-and-Excitation Networks, CVPR 2018 (SE-Inception on GoogLeNet)",
)
def se_inception(
    num_classes: int = 1000,
    in_channels: int = 3,
    aux_classifiers: bool = True,
    se_ratio: int = 16,
    dropout: float = 0.4,
    features_only: bool = False,
) -> GoogLeNet:
    """GoogLeNet with an SE block (ratio 16) on the output of each of its nine inception modules."""
    return GoogLeNet(
        num_classes, in_channels, aux_classifiers, se_ratio, dropout, features_only=features_only
    )
