"""The building blocks of the landmark CNNs: residual units, bottlenecks, inception modules, SE blocks.

Each block is the unit the design notes draw (Géron, *Hands-On Machine Learning*, ch. 14), with the
names torchvision and timm use inside it (``conv1``, ``bn1``, ...), so that checkpoint key mapping
(``cnnkit.models.checkpoints``) is a short table rather than a rewrite.

Padding: the notes use TensorFlow's 'same'. torchvision's ResNet pads its stride-2 3×3 convolutions
symmetrically (``padding=1``), which differs from 'same' on even inputs (TF puts the extra row at the
bottom only). Blocks therefore take ``padding="same"`` (the notes) or an int (torchvision); models that
promise torchvision weight parity pass ints.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.layers.conv import Conv2d
from cnnkit.layers.pool import MaxPool2d


class SEBlock(nn.Module):
    """Squeeze-and-excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, fig. 2-3).

    Global average pool → dense + ReLU to ``channels // ratio`` → dense + sigmoid → rescale each map.
    Input and output (N, C, H, W). Parameters: 2·C·C/r + C/r + C, equal to timm's ``SEModule``
    (which uses 1×1 convolutions; a dense layer on the pooled vector is the same map).
    """

    def __init__(self, channels: int, ratio: int = 16) -> None:
        super().__init__()
        if channels < ratio:
            raise ValueError(f"SEBlock: channels={channels} is smaller than ratio={ratio}")
        hidden = channels // ratio
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=(2, 3))  # N x C: the squeeze (global average pool)
        scale = self.gate(self.fc2(self.act(self.fc1(squeezed))))  # N x C, each in (0, 1)
        return x * scale[:, :, None, None]


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity, or the notes' 1×1 stride-s conv + BN when the shape changes.

    A 1×1 kernel needs no padding under 'same' at any stride, so ``padding=0`` is exact for both
    conventions and stays on PyTorch's fast path.
    """
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        Conv2d(in_channels, out_channels, 1, stride=stride, padding=0, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def _dilated_padding(padding: str | int, dilation: int) -> str | int:
    """A 3×3 conv's padding at ``dilation``: 'same' stays 'same' (the layer counts the dilated
    extent); torchvision's symmetric int ``p`` becomes ``p * dilation`` (its ``padding=dilation``)."""
    return padding if isinstance(padding, str) else padding * dilation


class ResidualUnit(nn.Module):
    """The notes' residual unit (He et al., "Deep Residual Learning", CVPR 2016, fig. 2 left).

    3×3 conv (stride s) + BN + ReLU → 3×3 conv + BN [→ SE] → + skip → ReLU, the skip being a
    1×1 stride-s conv + BN when the shape changes. Output (N, out, ceil(H/s), ceil(W/s)).
    ``dilation`` > 1 dilates both 3×3 convs (dilated ResNets for dense prediction; torchvision's
    ``BasicBlock`` refuses dilation, timm's allows it).
    torchvision calls it ``BasicBlock``; its parameter names are the same, its ``downsample`` is
    our ``shortcut``.
    """

    expansion = 1
    #: applied back to back in ``forward``: foldable for inference (``cnnkit.models.fusion``)
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        padding: str | int = "same",
        se_ratio: int | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        padding = _dilated_padding(padding, dilation)
        self.conv1 = Conv2d(
            in_channels, out_channels, 3, stride, padding, dilation=dilation, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = Conv2d(
            out_channels, out_channels, 3, padding=padding, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.se = SEBlock(out_channels, se_ratio) if se_ratio else nn.Identity()
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.act2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """The bottleneck residual unit (He et al. 2016, fig. 5 right): 1×1 → 3×3 → 1×1, expansion 4.

    ``out_channels`` is the unit's output depth; the inner width is ``out_channels // 4``. The
    stride sits on the 3×3 conv, as in torchvision's "ResNet v1.5" (the paper put it on the first
    1×1), so torchvision weights load unchanged. With ``se_ratio`` an SE block rescales the residual
    branch before the addition (Hu et al. 2018, fig. 3: SE-ResNet).
    """

    expansion = 4
    #: applied back to back in ``forward``: foldable for inference (``cnnkit.models.fusion``)
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        padding: str | int = "same",
        se_ratio: int | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        if out_channels % self.expansion:
            raise ValueError(
                f"Bottleneck: out_channels={out_channels} is not a multiple of {self.expansion}"
            )
        width = out_channels // self.expansion
        self.conv1 = Conv2d(in_channels, width, 1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = Conv2d(
            width, width, 3, stride, _dilated_padding(padding, dilation), dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = Conv2d(width, out_channels, 1, padding=0, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.se = SEBlock(out_channels, se_ratio) if se_ratio else nn.Identity()
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))  # N x width x H x W
        out = self.act2(self.bn2(self.conv2(out)))  # N x width x H/s x W/s
        out = self.se(self.bn3(self.conv3(out)))  # N x out x H/s x W/s
        return self.act3(out + self.shortcut(x))


def _conv_relu(in_channels: int, out_channels: int, kernel_size: int) -> Conv2d:
    return Conv2d(in_channels, out_channels, kernel_size, padding="same", activation="relu")


class InceptionModule(nn.Module):
    """GoogLeNet's inception module (Szegedy et al., "Going Deeper with Convolutions", 2014, fig. 2b).

    Four branches, every layer stride 1 and 'same' with ReLU, concatenated on depth:
    1×1 (``c1``); 1×1 (``c3_reduce``) → 3×3 (``c3``); 1×1 (``c5_reduce``) → 5×5 (``c5``);
    3×3 max pool → 1×1 (``pool_proj``). Output (N, c1 + c3 + c5 + pool_proj, H, W). As in the
    paper the convolutions have biases and no batch normalization. With ``se_ratio`` an SE block
    rescales the concatenated output (Hu et al. 2018, fig. 2: SE-Inception).
    """

    def __init__(
        self,
        in_channels: int,
        c1: int,
        c3_reduce: int,
        c3: int,
        c5_reduce: int,
        c5: int,
        pool_proj: int,
        se_ratio: int | None = None,
    ) -> None:
        super().__init__()
        self.out_channels = c1 + c3 + c5 + pool_proj
        self.branch1 = _conv_relu(in_channels, c1, 1)
        self.branch3 = nn.Sequential(
            _conv_relu(in_channels, c3_reduce, 1), _conv_relu(c3_reduce, c3, 3)
        )
        self.branch5 = nn.Sequential(
            _conv_relu(in_channels, c5_reduce, 1), _conv_relu(c5_reduce, c5, 5)
        )
        self.branch_pool = nn.Sequential(
            MaxPool2d(3, stride=1, padding="same"), _conv_relu(in_channels, pool_proj, 1)
        )
        self.se = SEBlock(self.out_channels, se_ratio) if se_ratio else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)]
        return self.se(torch.cat(branches, dim=1))  # N x (c1 + c3 + c5 + pool_proj) x H x W
