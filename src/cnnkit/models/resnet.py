"""ResNet and SE-ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016;
Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018).

One ``ResNet`` class covers the family, as in timm: the builders only state the block, the number of
units per stage and options. The units are the notes' ``ResidualUnit`` (torchvision's BasicBlock) and
``Bottleneck`` from ``cnnkit.layers.blocks``.

- ``resnet18`` … ``resnet152``: torchvision's configuration, parameter for parameter (11,689,512;
  21,797,672; 25,557,032; 44,549,160; 60,192,808 at 1000 classes). Deliberate differences from the
  paper, all torchvision's: the bottleneck's stride is on its 3×3 conv ("v1.5"), and every conv and
  the stem's max pool pad symmetrically (``padding=k // 2``) rather than TensorFlow's 'same', which on
  an even input puts the extra row at the bottom only. That symmetric padding is what makes
  torchvision's weights reproduce torchvision's outputs (``cnnkit.models.checkpoints``).
- ``resnet34_notes``: the notes' Keras listing: 'same' padding everywhere, bias-free convs, BN, and a
  ``Dense(10)`` head after global average pooling: 21,289,802 trainable parameters, as Keras counts it.
- ``se_resnet50``: SE blocks (ratio 16) on each bottleneck's residual branch; 28,088,024 parameters,
  equal to timm's ``seresnet50``.
- ``resnet18_narrow``: ResNet-18 at half width with the ImageNet stem, for 128×128 scenes on a CPU.
- ``resnet18_small``, ``resnet34_small``, ``resnet50_small``: for 28×28 and 32×32 images, a 3×3
  stride-1 stem and no max pool, the ImageNet widths and depths otherwise (the common CIFAR adaptation,
  not the paper's §4.2 CIFAR nets of 16/32/64 maps): the stages run at strides 1, 2, 4, 8.

Every builder takes ``dilated=True`` for dense prediction (Yu & Koltun, "Multi-Scale Context
Aggregation by Dilated Convolutions", ICLR 2016; Chen et al., DeepLab, TPAMI 2018): the last two
stages keep the resolution of the second (stride 8 for the ImageNet stem) and dilate their 3×3
convolutions by 2 and 4 instead, torchvision's ``replace_stride_with_dilation=[False, True, True]``:
as there, the first unit of a dilated stage keeps the previous stage's dilation (1, then 2). The
weights are unchanged, so a classification checkpoint loads into a dilated backbone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TypedDict

import torch
from torch import nn

from cnnkit.layers.blocks import Bottleneck, ResidualUnit
from cnnkit.layers.conv import Conv2d
from cnnkit.layers.pool import MaxPool2d
from cnnkit.models.features import make_feature_info
from cnnkit.models.registry import register_model

Block = type[ResidualUnit] | type[Bottleneck]


class ResNet(nn.Module):
    """A stem, four stages of residual units, global average pooling and a dense classifier.

    Input (N, in_channels, H, W) with H, W >= 1; ``forward`` returns (N, num_classes) logits,
    (N, features) pooled features when ``num_classes=0``, or the list of stage feature maps when
    ``features_only=True`` (stem output, then the four stages; ``feature_info`` lists their channels,
    strides and module names; the classifier is then not built).

    Args:
        block: ``ResidualUnit`` (18, 34) or ``Bottleneck`` (50, 101, 152).
        layers: units per stage, e.g. (3, 4, 6, 3).
        stem: "imagenet" (7×7/2 conv, 3×3/2 max pool) or "small" (3×3/1 conv, no pool).
        padding: "symmetric" (torchvision's ``k // 2``) or "same" (TensorFlow's, as the notes).
        se_ratio: add an SE block with this reduction ratio to every unit (SE-ResNet).
        dilated: the last two stages at stride 1 with dilation 2 and 4 (output stride 8).
    """

    #: submodules ``truncate`` removed (``checkpoints.load_state_dict_strict`` ignores their keys)
    dropped_state_prefixes: tuple[str, ...] = ()

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: str = "imagenet",
        padding: str = "symmetric",
        se_ratio: int | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        features_only: bool = False,
        dilated: bool = False,
    ) -> None:
        super().__init__()
        if stem not in ("imagenet", "small"):
            raise ValueError(f"ResNet: stem={stem!r}; expected 'imagenet' or 'small'")
        if padding not in ("symmetric", "same"):
            raise ValueError(f"ResNet: padding={padding!r}; expected 'symmetric' or 'same'")
        same = padding == "same"
        self.num_classes = num_classes
        self.features_only = features_only

        stem_width = widths[0]
        if stem == "imagenet":
            conv = Conv2d(in_channels, stem_width, 7, 2, padding="same" if same else 3, bias=False)
            pool: nn.Module = (
                MaxPool2d(3, 2, padding="same") if same else nn.MaxPool2d(3, 2, padding=1)
            )
            stem_stride = 2
        else:
            conv = Conv2d(in_channels, stem_width, 3, 1, padding="same", bias=False)
            pool, stem_stride = nn.Identity(), 1
        self.stem = nn.Sequential(
            OrderedDict(conv=conv, bn=nn.BatchNorm2d(stem_width), act=nn.ReLU(inplace=True))
        )
        self.stem_pool = pool

        stages, in_width = [], stem_width
        self.feature_channels, self.feature_strides = [stem_width], [stem_stride]
        stride_so_far = stem_stride * (2 if stem == "imagenet" else 1)
        dilation = 1
        for index, (units, width) in enumerate(zip(layers, widths, strict=True)):
            out_width = width * block.expansion
            stride = 1 if index == 0 else 2
            first_dilation = dilation
            if dilated and index >= 2:  # trade the stride for dilation (torchvision's rule)
                dilation, stride = dilation * stride, 1
            units_list = []
            for unit in range(units):
                units_list.append(
                    block(
                        in_width,
                        out_width,
                        stride=stride if unit == 0 else 1,
                        padding="same" if same else 1,
                        se_ratio=se_ratio,
                        dilation=first_dilation if unit == 0 else dilation,
                    )
                )
                in_width = out_width
            stages.append(nn.Sequential(*units_list))
            stride_so_far *= stride
            self.feature_channels.append(out_width)
            self.feature_strides.append(stride_so_far)
        self.stages = nn.Sequential(*stages)
        self.feature_info = make_feature_info(
            self.feature_channels,
            self.feature_strides,
            ["stem", *(f"stages.{i}" for i in range(len(stages)))],
        )
        self.num_features = in_width
        with_fc = num_classes > 0 and not features_only
        self.fc = nn.Linear(in_width, num_classes) if with_fc else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialization: He normal (fan_out) for convs, BN to identity.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def truncate(self, maps: int) -> None:
        """Keep what computes the first ``maps`` feature maps (the stem's, then ``maps - 1``
        stages) and drop the deeper stages: a head that reads a shallower stage never pays for
        them, and every parameter left receives a gradient. The dropped modules' names go to
        ``dropped_state_prefixes``, so a checkpoint written before the cut still loads (its weights
        of those stages, which never touched the output, are ignored: ``load_state_dict_strict``)."""
        if not self.features_only or not 1 <= maps <= len(self.feature_channels):
            raise ValueError(
                f"ResNet.truncate({maps}): expected a feature extractor (features_only=True) and "
                f"1 <= maps <= {len(self.feature_channels)}"
            )
        kept = maps - 1  # stages after the stem
        self.dropped_state_prefixes += tuple(f"stages.{i}" for i in range(kept, len(self.stages)))
        self.stages = self.stages[:kept]
        self.feature_channels = self.feature_channels[:maps]
        self.feature_strides = self.feature_strides[:maps]
        self.feature_info = self.feature_info[:maps]
        self.num_features = self.feature_channels[-1]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem's output and each stage's output, strides ``feature_strides``."""
        x = self.stem(x)  # N x 64 x H/2 x W/2 (H x W for the small stem)
        maps = [x]
        x = self.stem_pool(x)  # N x 64 x H/4 x W/4
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before pooling: N x num_features x H/32 x W/32."""
        return self.stages(self.stem_pool(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_stages(x)
        x = self.forward_features(x).mean(dim=(2, 3))  # N x num_features: global average pool
        return self.fc(x)


_PAPER = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"
_SE_PAPER = "Hu et al., Squeeze-and-Excitation Networks, CVPR 2018"


class _Entry(TypedDict):
    input_size: tuple[int, int, int]
    min_size: int
    classifier: str


_IMAGENET: _Entry = {"input_size": (3, 224, 224), "min_size": 32, "classifier": "fc"}
_SMALL: _Entry = {"input_size": (3, 32, 32), "min_size": 8, "classifier": "fc"}


@register_model(**_IMAGENET, paper=_PAPER)
def resnet18(
    num_classes: int = 1000,
    in_channels: int = 3,
    features_only: bool = False,
    dilated: bool = False,
) -> ResNet:
    """ResNet-18 (11,689,512 parameters at 1000 classes, as torchvision's)."""
    return ResNet(
        ResidualUnit,
        (2, 2, 2, 2),
        num_classes=num_classes,
        in_channels=in_channels,
        features_only=features_only,
        dilated=dilated,
    )


@register_model(**_IMAGENET, paper=_PAPER)
def resnet34(
    num_classes: int = 1000,
    in_channels: int = 3,
    features_only: bool = False,
    dilated: bool = False,
) -> ResNet:
    """ResNet-34 (21,797,672 parameters at 1000 classes, as torchvision's)."""
    return ResNet(
        ResidualUnit,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        features_only=features_only,
        dilated=dilated,
    )


@register_model(**_IMAGENET, paper=_PAPER)
def resnet50(
    num_classes: int = 1000,
    in_channels: int = 3,
    features_only: bool = False,
    dilated: bool = False,
) -> ResNet:
    """ResNet-50 (25,557,032 parameters at 1000 classes, as torchvision's)."""
    return ResNet(
        Bottleneck,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        features_only=features_only,
        dilated=dilated,
    )


@register_model(**_IMAGENET, paper=_PAPER)
def resnet101(
    num_classes: int = 1000,
    in_channels: int = 3,
    features_only: bool = False,
    dilated: bool = False,
) -> ResNet:
    """ResNet-101 (44,549,160 parameters at 1000 classes, as torchvision's)."""
    return ResNet(
        Bottleneck,
        (3, 4, 23, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        features_only=features_only,
        dilated=dilated,
    )


@register_model(**_IMAGENET, paper=_PAPER)
def resnet152(
    num_classes: int = 1000,
    in_channels: int = 3,
    features_only: bool = False,
    dilated: bool = False,
) -> ResNet:
    """ResNet-152 (60,192,808 parameters at 1000 classes, as torchvision's)."""
    return ResNet(
        Bottleneck,
        (3, 8, 36, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        features_only=features_only,
        dilated=dilated,
    )


@register_model(
    input_size=(3, 224, 224),
    min_size=32,
    classifier="fc",
    paper="Géron, Hands-On Machine Learning (2019), ch. 14, 'Implementing a ResNet-34 CNN Using Keras'",
)
def resnet34_notes(
    num_classes: int = 10, in_channels: int = 3, features_only: bool = False, dilated: bool = False
) -> ResNet:
    """The notes' Keras ResNet-34: 'same' padding, Dense(10) head; 21,289,802 trainable parameters."""
    return ResNet(
        ResidualUnit,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        padding="same",
        features_only=features_only,
        dilated=dilated,
    )


@register_model(**_IMAGENET, paper=_SE_PAPER)
def se_resnet50(
    num_classes: int = 1000,
    in_channels: int = 3,
    features_only: bool = False,
    dilated: bool = False,
    se_ratio: int = 16,
) -> ResNet:
    """SE-ResNet-50 (28,088,024 parameters at 1000 classes, as timm's ``seresnet50``)."""
    return ResNet(
        Bottleneck,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        se_ratio=se_ratio,
        features_only=features_only,
        dilated=dilated,
    )


@register_model(input_size=(1, 128, 128), min_size=32, classifier="fc", paper=_PAPER)
def resnet18_narrow(
    num_classes: int = 10, in_channels: int = 1, features_only: bool = False, dilated: bool = False
) -> ResNet:
    """ResNet-18 at half width (32, 64, 128, 256 maps) with the ImageNet stem, for 128×128 grey
    scenes on a CPU (``cnnkit.data.scenes``): the 7×7/2 stem and max pool bring a 128×128 image to
    32×32 before the first stage, so a forward pass costs about 0.15 GMACs — a twelfth of the notes'
    Fashion-MNIST CNN at that size, which runs its convolutions at full resolution. Stages at strides
    4, 8, 16, 32 (8, 8, 8 with ``dilated=True``) feed detection and segmentation heads. Halving the
    widths is the deliberate difference from the paper (timm's ``resnet18`` is the full width)."""
    return ResNet(
        ResidualUnit,
        (2, 2, 2, 2),
        num_classes=num_classes,
        in_channels=in_channels,
        widths=(32, 64, 128, 256),
        features_only=features_only,
        dilated=dilated,
    )


@register_model(**_SMALL, paper=_PAPER)
def resnet18_small(
    num_classes: int = 10, in_channels: int = 3, features_only: bool = False, dilated: bool = False
) -> ResNet:
    """ResNet-18 for 28×28/32×32 images: 3×3 stride-1 stem, no max pool."""
    return ResNet(
        ResidualUnit,
        (2, 2, 2, 2),
        num_classes=num_classes,
        in_channels=in_channels,
        stem="small",
        features_only=features_only,
        dilated=dilated,
    )


@register_model(**_SMALL, paper=_PAPER)
def resnet34_small(
    num_classes: int = 10, in_channels: int = 3, features_only: bool = False, dilated: bool = False
) -> ResNet:
    """ResNet-34 for 28×28/32×32 images: 3×3 stride-1 stem, no max pool."""
    return ResNet(
        ResidualUnit,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        stem="small",
        features_only=features_only,
        dilated=dilated,
    )


@register_model(**_SMALL, paper=_PAPER)
def resnet50_small(
    num_classes: int = 10, in_channels: int = 3, features_only: bool = False, dilated: bool = False
) -> ResNet:
    """ResNet-50 for 28×28/32×32 images: 3×3 stride-1 stem, no max pool."""
    return ResNet(
        Bottleneck,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        stem="small",
        features_only=features_only,
        dilated=dilated,
    )
