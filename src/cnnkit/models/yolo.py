"""A YOLO-style detector: a zoo backbone's feature map, an S×S grid of cells, B anchors per cell
(Redmon et al., "You Only Look Once", CVPR 2016; Redmon & Farhadi, "YOLO9000: Better, Faster,
Stronger", CVPR 2017; the notes, ch. 14, "You Only Look Once").

The modules here only compute the raw grid; what the numbers mean (targets, encoding, decoding,
loss, NMS) lives in ``cnnkit.detection.yolo``, since models must not import detection.

Output of ``YOLODetector`` / ``YOLOHead``: (N, B, S_h, S_w, 5 + K) raw values per anchor and cell:
``t_x, t_y`` (the centre's offset inside its cell is sigmoid(t)), ``t_w, t_h`` (the box is the
anchor's size times exp(t): log-scale factors), the objectness logit and K class logits.

Multi-scale training (YOLOv2 §2 "Multi-Scale Training": "every 10 batches our network randomly
chooses a new image dimension size" from 320, 352, …, 608): with ``multi_scale`` sizes, the model
in training mode resizes each batch (bilinear) to a square side drawn from them every
``multi_scale_every`` batches, inside ``forward``, since the ``Trainer`` has no hook between batches.
The draw depends only on ``multi_scale_seed`` and the batch count, so every DDP process picks the
same size. The targets stay in the pixels of the input as given: whoever computes the loss must
scale them by ``input_scale`` = (new height / height, new width / width), which ``forward`` sets on
every call ((1, 1) in eval mode or without multi-scale); ``cnnkit.tasks.detect`` does. Anchors are
not scaled: as YOLOv2's (fixed in grid cells, so fixed in pixels), they keep their pixel size while
the objects grow and shrink with the image, which is the point of the exercise.

Deliberate differences from YOLOv2: any zoo backbone (``create_model(name, features_only=True)``)
at any of its stages instead of Darknet-19; anchors in input pixels (YOLOv3's convention) rather
than in grid cells; the objectness bias starts at the logit of 1% (Lin et al., "Focal Loss for
Dense Object Detection", ICCV 2017, §4.1), so the many empty cells do not swamp the first steps.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.models.registry import create_model, register_model

# YOLOv3's three smallest COCO anchors and two between them, (w, h) in pixels; replace them with
# ``cnnkit.detection.kmeans_anchors`` of the training boxes.
DEFAULT_ANCHORS: tuple[tuple[float, float], ...] = (
    (10.0, 13.0),
    (16.0, 30.0),
    (33.0, 23.0),
    (30.0, 61.0),
    (62.0, 45.0),
)


class YOLOHead(nn.Module):
    """3×3 conv + BatchNorm + LeakyReLU(0.1) (Darknet's block), then a 1×1 conv to B·(5 + K) maps.
    (N, C, S_h, S_w) → (N, B, S_h, S_w, 5 + K)."""

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        hidden_channels: int = 128,
        objectness_prior: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_anchors, self.num_classes = num_anchors, num_classes
        self.conv = nn.Conv2d(in_channels, hidden_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(hidden_channels)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.predict = nn.Conv2d(hidden_channels, num_anchors * (5 + num_classes), 1)
        assert self.predict.bias is not None
        with torch.no_grad():
            bias = self.predict.bias.view(num_anchors, 5 + num_classes)
            bias.zero_()
            bias[:, 4] = math.log(objectness_prior / (1 - objectness_prior))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        x = self.predict(self.act(self.bn(self.conv(x))))  # N x B·(5+K) x S_h x S_w
        x = x.view(n, self.num_anchors, 5 + self.num_classes, h, w)
        return x.permute(0, 1, 3, 4, 2).contiguous()  # N x B x S_h x S_w x (5+K)


class YOLODetector(nn.Module):
    """Backbone stage map → ``YOLOHead``. Input (N, C, H, W) with H, W multiples of ``stride``
    (any such size: multi-scale training changes it every few batches); output (N, B, H/stride,
    W/stride, 5 + K). ``anchors`` (B, 2) are (w, h) in input pixels; ``stride`` is the backbone
    stage's, in pixels per cell. ``multi_scale``: square input sides (multiples of ``stride``) that
    training batches are resized to, a new one every ``multi_scale_every`` batches (see the module
    docstring); empty for none."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        anchors: Sequence[Sequence[float]] = DEFAULT_ANCHORS,
        feature_index: int = -1,
        hidden_channels: int = 128,
        multi_scale: Sequence[int] = (),
        multi_scale_every: int = 10,
        multi_scale_seed: int = 0,
    ) -> None:
        super().__init__()
        channels = getattr(backbone, "feature_channels", None)
        strides = getattr(backbone, "feature_strides", None)
        if channels is None or strides is None:
            raise ValueError(
                f"YOLODetector: backbone {type(backbone).__name__} has no feature_channels/"
                "feature_strides; expected a zoo model built with features_only=True"
            )
        if num_classes < 1:
            raise ValueError(f"YOLODetector: num_classes={num_classes}; expected >= 1")
        anchor_tensor = torch.as_tensor(anchors, dtype=torch.float32)
        if anchor_tensor.dim() != 2 or anchor_tensor.shape[1] != 2 or len(anchor_tensor) == 0:
            raise ValueError(
                f"YOLODetector: anchors of shape {tuple(anchor_tensor.shape)}; expected (B, 2) (w, h)"
            )
        self.backbone = backbone
        self.feature_index = feature_index
        self.stride = int(strides[feature_index])
        self.num_classes = num_classes
        self.register_buffer("anchors", anchor_tensor)
        self.head = YOLOHead(
            channels[feature_index], len(anchor_tensor), num_classes, hidden_channels
        )
        bad = [size for size in multi_scale if int(size) < self.stride or int(size) % self.stride]
        if bad or multi_scale_every < 1:
            raise ValueError(
                f"YOLODetector: multi_scale={list(multi_scale)}, multi_scale_every="
                f"{multi_scale_every}; expected sides that are positive multiples of the stride "
                f"{self.stride} and a period >= 1"
            )
        self.multi_scale = tuple(int(size) for size in multi_scale)
        self.multi_scale_every = multi_scale_every
        self.multi_scale_seed = multi_scale_seed
        self.batches_seen = 0  # training batches, for the multi-scale draw (not saved)
        #: (new height / height, new width / width) of the last forward's input resize
        self.input_scale: tuple[float, float] = (1.0, 1.0)

    def training_size(self, batch: int) -> int:
        """The square side multi-scale training uses for training batch number ``batch`` (from 0)."""
        period = batch // self.multi_scale_every
        return random.Random(self.multi_scale_seed * 1_000_003 + period).choice(self.multi_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.input_scale = (1.0, 1.0)
        if self.training and self.multi_scale:
            side = self.training_size(self.batches_seen)
            self.batches_seen += 1
            height, width = x.shape[-2:]
            if (height, width) != (side, side):
                x = F.interpolate(
                    x, size=(side, side), mode="bilinear", align_corners=False, antialias=True
                )  # N x C x side x side
                self.input_scale = (side / height, side / width)
        features = self.backbone(x)[self.feature_index]  # N x C x H/stride x W/stride
        return self.head(features)  # N x B x H/stride x W/stride x (5+K)


@register_model(
    input_size=(1, 128, 128),
    min_size=8,
    classifier="head.predict",
    paper="Redmon & Farhadi, YOLO9000: Better, Faster, Stronger, CVPR 2017",
    task="detect",
)
def yolo(
    num_classes: int = 10,
    in_channels: int = 1,
    backbone: str = "fashion_cnn",
    anchors: Sequence[Sequence[float]] = DEFAULT_ANCHORS,
    feature_index: int = -1,
    hidden_channels: int = 128,
    multi_scale: Sequence[int] = (),
    multi_scale_every: int = 10,
    multi_scale_seed: int = 0,
) -> YOLODetector:
    """A YOLO-style detector on a zoo backbone (default: the notes' Fashion-MNIST CNN, whose last
    stage is at stride 4: a 32×32 grid on 128×128 scenes) with B = len(anchors) anchors per cell;
    ``multi_scale`` sides for YOLOv2's multi-scale training (e.g. ``[96, 112, 128, 144, 160]`` on
    128×128 scenes)."""
    features = create_model(backbone, in_channels=in_channels, features_only=True)
    return YOLODetector(
        features, num_classes, anchors, feature_index, hidden_channels,
        multi_scale, multi_scale_every, multi_scale_seed,
    )  # fmt: skip
