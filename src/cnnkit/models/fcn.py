"""Fully convolutional networks (Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015): FCN-32s, FCN-16s and FCN-8s on the stage features of any zoo backbone.

The paper's recipe, for a backbone whose last stage has reduction R (32 for VGG and ResNet):
- a 1×1 "score" convolution turns the last stage into one map per class (FCN-32s upsamples it by R);
- FCN-16s upsamples those scores ×2 with a transposed convolution, adds the scores of the stage at
  reduction R/2 (``pool4`` in the paper, stride 16) and upsamples the sum by R/2; FCN-8s adds one more
  step with the stage at R/4 (``pool3``, stride 8) and upsamples by R/4;
- the ×2 transposed convolutions start as bilinear interpolation and are learned; the final
  upsampling is fixed bilinear interpolation (§4.2);
- the score layers start at zero (§4.3: random initialization gave neither better results nor faster
  convergence), so training starts from uniform class scores.

Contract: input (N, in_channels, H, W), any H and W the backbone accepts; output (N, num_classes, H, W)
logits at the input size.

Deliberate differences from the paper:
- the backbone is any zoo model's ``features_only`` stages (ResNet-18 by default: small enough for
  CPU training, and it takes 1-channel 128×128 images) instead of VGG-16 with its dense layers turned
  into 7×7/1×1 convolutions (``fc6``/``fc7``) and the 100-pixel input padding;
- the skips come from the deepest stage at R/2 and R/4, which for a stride-32 backbone are the
  paper's stride-16 and stride-8 stages; with ``dilated=True`` (ResNets: the last two stages at
  stride 8, dilation 2 and 4) the last stage is at stride 8 and the skips at 4 and 2;
- the paper crops each upsampled map at an offset computed from the receptive fields of its
  unpadded VGG; our backbones pad their convolutions, so the maps are aligned at their top-left cell
  and the crop (``fit_to_size``) only removes the extra cells at the bottom and right;
- ``input_scale=s`` (default 1) resizes the input by ``s`` (bilinear) before the backbone and the
  scores back to the input size after the final upsampling: ``s > 1`` gives small objects more
  backbone pixels and the output a finer stride (R/s), at s² the work per image. On the
  Fashion-MNIST scenes a ``fcn8s`` trained at 1× scored validation mIoU 0.681 when shown the
  scenes enlarged 1.25× and mirrored, against 0.669 at 1× (docs/notes/issue-13.md): the
  stride-32 backbone names the small items better when they are larger.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.layers.conv import Conv2d
from cnnkit.layers.upsample import FixedBilinearUpsample, bilinear_conv_transpose, fit_to_size
from cnnkit.models.features import create_backbone
from cnnkit.models.registry import register_model


class FCN(nn.Module):
    """A backbone's stages → 1×1 class scores → learned ×2 upsampling and skip sums → fixed bilinear
    upsampling to the input size.

    Args:
        backbone: a registered classification model, used with ``features_only=True``.
        skips: 0 (FCN-32s), 1 (FCN-16s) or 2 (FCN-8s).
        dilated: build the backbone with ``dilated=True`` (ResNets only).
        input_scale: resize the input by this factor for the backbone (see the module docstring).
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        backbone: str = "resnet18",
        skips: int = 2,
        dilated: bool = False,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"FCN: num_classes={num_classes}; expected at least 1")
        if not 0 < input_scale <= 4:
            raise ValueError(f"FCN: input_scale={input_scale}; expected a factor in (0, 4]")
        self.input_scale = float(input_scale)
        options = {"dilated": True} if dilated else {}
        self.backbone, info = create_backbone(backbone, in_channels, **options)
        self.feature_info = info
        # The stages the head reads: the last one, then the deepest at half its reduction, ...
        self.taps = [len(info) - 1]
        for _ in range(skips):
            wanted = info[self.taps[-1]]["reduction"] // 2
            candidates = [i for i in range(self.taps[-1]) if info[i]["reduction"] == wanted]
            if wanted < 1 or not candidates:
                raise ValueError(
                    f"FCN: backbone {backbone!r} (dilated={dilated}) has no stage at reduction "
                    f"{wanted} for skip {len(self.taps)} of {skips}; its stage reductions are "
                    f"{[f['reduction'] for f in info]}"
                )
            self.taps.append(candidates[-1])
        self.num_classes = num_classes
        score_layers = [
            Conv2d(info[tap]["channels"], num_classes, 1, padding=0) for tap in self.taps
        ]
        for layer in score_layers:
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        self.score = nn.ModuleList(score_layers)
        self.upscore = nn.ModuleList(bilinear_conv_transpose(num_classes, 2) for _ in range(skips))
        self.upsample = FixedBilinearUpsample(num_classes, info[self.taps[-1]]["reduction"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.input_scale != 1:
            scaled = (round(size[0] * self.input_scale), round(size[1] * self.input_scale))
            x = F.interpolate(
                x, scaled, mode="bilinear", align_corners=False, antialias=self.input_scale < 1
            )
        maps = self.backbone(x)
        scores = self.score[0](maps[self.taps[0]])  # N x K x H/R x W/R
        for tap, score, upscore in zip(self.taps[1:], self.score[1:], self.upscore, strict=True):
            skip = score(maps[tap])  # N x K x H/r x W/r, r half the reduction of ``scores``
            scores = fit_to_size(upscore(scores), skip.shape[-2:]) + skip
        scores = fit_to_size(self.upsample(scores), x.shape[-2:])  # N x K x H x W (as resized)
        if scores.shape[-2:] != size:
            scores = F.interpolate(scores, size, mode="bilinear", align_corners=False)
        return scores


_PAPER = (
    "Long, Shelhamer & Darrell, Fully Convolutional Networks for Semantic Segmentation, CVPR 2015"
)
# PASCAL VOC: 21 classes (20 + background), images up to 500×500; the smallest input is that of the
# default backbone, resnet18.


@register_model(
    input_size=(3, 500, 500), min_size=32, classifier="score", paper=_PAPER, task="segment"
)
def fcn32s(
    num_classes: int = 21,
    in_channels: int = 3,
    backbone: str = "resnet18",
    dilated: bool = False,
    input_scale: float = 1.0,
) -> FCN:
    """FCN-32s: the last stage's scores, upsampled by its reduction."""
    return FCN(num_classes, in_channels, backbone, 0, dilated, input_scale)


@register_model(
    input_size=(3, 500, 500), min_size=32, classifier="score", paper=_PAPER, task="segment"
)
def fcn16s(
    num_classes: int = 21,
    in_channels: int = 3,
    backbone: str = "resnet18",
    dilated: bool = False,
    input_scale: float = 1.0,
) -> FCN:
    """FCN-16s: FCN-32s plus a skip from the stage at half the last one's reduction (the stride-16
    stage of a stride-32 backbone)."""
    return FCN(num_classes, in_channels, backbone, 1, dilated, input_scale)


@register_model(
    input_size=(3, 500, 500), min_size=32, classifier="score", paper=_PAPER, task="segment"
)
def fcn8s(
    num_classes: int = 21,
    in_channels: int = 3,
    backbone: str = "resnet18",
    dilated: bool = False,
    input_scale: float = 1.0,
) -> FCN:
    """FCN-8s: FCN-16s plus a skip from the stage at a quarter of the last one's reduction (the
    stride-8 stage of a stride-32 backbone)."""
    return FCN(num_classes, in_channels, backbone, 2, dilated, input_scale)
