"""EfficientNet-Lite (Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019; the Lite
variants from the TensorFlow reference, ``tensorflow/tpu/models/official/efficientnet/lite``).

The network is a stem conv, a stack of MBConv blocks (Sandler et al., "MobileNetV2", CVPR 2018:
1×1 expansion → k×k depthwise → 1×1 linear projection, with a skip when the shape is unchanged) and a
1×1 head conv, then global average pooling, dropout and a dense classifier. Lite differs from B0 as the
reference's ``efficientnet_lite_builder.py`` states: no squeeze-and-excitation, ReLU6 instead of
swish, and the stem (32) and head (1280) are not scaled with the width. Lite0 is width 1.0, depth 1.0,
224×224 input, dropout 0.2: 4,652,008 parameters.

Deliberate choices, so that the TensorFlow-trained ImageNet weights give the reference's outputs:
- convolutions pad as TensorFlow's 'SAME' (``cnnkit.layers.Conv2d``): on an even input a stride-2
  k×k conv pads ``(k - 2) // 2`` before and the rest after, which torch's symmetric padding cannot do;
- BatchNorm ``eps=1e-3`` (TensorFlow's default, the reference's ``batch_norm_epsilon``), momentum 0.01
  (TF's 0.99 decay);
- stochastic depth ("drop connect") on the skip blocks, rate growing linearly to 0.2 over the blocks,
  as the reference trains it; it is the identity in eval mode.
The blocks are kept in one flat ``blocks`` sequence, numbered as the reference (and its PyTorch ports)
number them, so that checkpoint keys map with a rename table (``cnnkit.models.checkpoints``,
source ``"efficientnet_port"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from cnnkit.layers.conv import Conv2d
from cnnkit.models.features import make_feature_info
from cnnkit.models.registry import register_model

BN_EPS = 1e-3  # TensorFlow's BatchNormalization default, used by every EfficientNet checkpoint
BN_MOMENTUM = 0.01  # torch's momentum is 1 - TF's decay (0.99)


@dataclass(frozen=True)
class StageSpec:
    """One row of the paper's table 1: ``repeats`` MBConv blocks of one kind."""

    repeats: int
    kernel_size: int
    stride: int  # of the first block of the stage
    expand_ratio: int
    out_channels: int


# EfficientNet-B0's stages (paper table 1; the reference's block strings 'r1_k3_s11_e1_i32_o16', ...).
# Lite keeps them and drops SE; Lite1-4 scale depth and width of these rows.
LITE_STAGES = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)


class ConvBNAct(nn.Sequential):
    """Conv ('same') → BatchNorm → optional activation; keys ``conv.weight``, ``bn.*``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        activation: bool = True,
    ) -> None:
        super().__init__()
        # 1×1 convs need no padding at any stride; 0 keeps them on torch's fast path.
        padding = 0 if kernel_size == 1 else "same"
        self.conv = Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        if activation:
            self.act = nn.ReLU6(inplace=True)


class MBConv(nn.Module):
    """Inverted residual block without SE (EfficientNet-Lite's only block).

    N×C×H×W → [1×1 expand to C·e, BN, ReLU6] → k×k depthwise stride s, BN, ReLU6 → 1×1 project, BN
    (linear) → + input when s = 1 and C = out. Output N×out×ceil(H/s)×ceil(W/s).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = ConvBNAct(in_channels, hidden, 1) if expand_ratio != 1 else nn.Identity()
        self.dw = ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=False)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.drop_path = StochasticDepth(drop_path, "row") if self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(x)  # N x C*e x H x W
        out = self.dw(out)  # N x C*e x H/s x W/s
        out = self.project(out)  # N x out x H/s x W/s
        if self.has_skip:
            out = self.drop_path(out) + x
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: stem → MBConv stages → 1×1 head conv → pool → dropout → ``fc``.

    ``num_classes=0`` returns the pooled 1280 features; ``features_only=True`` returns the last
    feature map of the stages ending at strides 2, 4, 8, 16, 32 (16, 24, 40, 112, 320 channels;
    ``feature_info``), the 1×1 head conv and the classifier then not built (``forward_features``
    gives the blocks' output).
    """

    def __init__(
        self,
        stages: tuple[StageSpec, ...] = LITE_STAGES,
        num_classes: int = 1000,
        in_channels: int = 3,
        stem_channels: int = 32,
        head_channels: int = 1280,
        dropout: float = 0.2,
        drop_path_rate: float = 0.2,
        features_only: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features_only = features_only
        self.num_features = head_channels
        self.stem = ConvBNAct(in_channels, stem_channels, 3, stride=2)

        total_blocks = sum(s.repeats for s in stages)
        blocks: list[nn.Module] = []
        channels = stem_channels
        # Index of the last block at each output stride: where features_only taps the network.
        self.feature_blocks: list[int] = []
        self.feature_channels: list[int] = []
        for stage_index, stage in enumerate(stages):
            for repeat in range(stage.repeats):
                stride = stage.stride if repeat == 0 else 1
                # The reference scales drop connect by the block's position in the whole network.
                rate = drop_path_rate * len(blocks) / total_blocks
                blocks.append(
                    MBConv(
                        channels,
                        stage.out_channels,
                        stage.kernel_size,
                        stride,
                        stage.expand_ratio,
                        rate,
                    )  # fmt: skip
                )
                channels = stage.out_channels
            is_last = stage_index == len(stages) - 1
            if is_last or stages[stage_index + 1].stride > 1:
                self.feature_blocks.append(len(blocks) - 1)
                self.feature_channels.append(channels)
        self.blocks = nn.Sequential(*blocks)
        reductions, reduction = [], 2  # the stem's stride
        for stage in stages:
            reduction *= stage.stride
            reductions.append(reduction)
        kept = [i for i, s in enumerate(stages) if i == len(stages) - 1 or stages[i + 1].stride > 1]
        self.feature_info = make_feature_info(
            self.feature_channels,
            [reductions[i] for i in kept],
            [f"blocks.{i}" for i in self.feature_blocks],
        )
        # The 1×1 head conv feeds the classifier only: a feature extractor drops it.
        self.head: nn.Module = (
            nn.Identity() if features_only else ConvBNAct(channels, head_channels, 1)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        with_fc = num_classes > 0 and not features_only
        self.fc = nn.Linear(head_channels, num_classes) if with_fc else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The head conv's output, N×1280×H/32×W/32 (7×7 at 224)."""
        x = self.stem(x)  # N x 32 x H/2 x W/2
        x = self.blocks(x)  # N x 320 x H/32 x W/32
        return self.head(x)  # N x 1280 x H/32 x W/32

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps at strides 2, 4, 8, 16, 32."""
        x = self.stem(x)
        taps, outputs = set(self.feature_blocks), []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in taps:
                outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_stages(x)
        x = self.pool(self.forward_features(x)).flatten(1)  # N x 1280
        return self.fc(self.dropout(x))  # N x num_classes (N x 1280 when num_classes=0)


@register_model(
    input_size=(3, 224, 224),
    min_size=32,
    classifier="fc",
    paper="Tan & Le, EfficientNet (ICML 2019); Lite variants: tensorflow/tpu efficientnet/lite (2020)",
)
def efficientnet_lite0(
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.2,
    drop_path_rate: float = 0.2,
    features_only: bool = False,
) -> EfficientNetLite:
    """EfficientNet-Lite0: width 1.0, depth 1.0, 224×224; 4,652,008 parameters at 1000 classes."""
    return EfficientNetLite(
        LITE_STAGES,
        num_classes=num_classes,
        in_channels=in_channels,
        dropout=dropout,
        drop_path_rate=drop_path_rate,
        features_only=features_only,
    )
