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

Top-down path (``top_down=True``; YOLOv3 §2.3, Lin et al., "Feature Pyramid Networks for Object
Detection", CVPR 2017): the head's stage alone may be too shallow to tell the classes apart (on the
Fashion-MNIST scenes a stride-8 ResNet stage found 99% of the items but named the class of too few),
so the deeper stages, which the backbone computes anyway, are merged into it from the deepest down:
each step a 1×1 lateral conv of the stage plus the deeper level upsampled (nearest) to its size,
then a 3×3 conv + BatchNorm + LeakyReLU; the head reads the merged map. Measured there: better per
epoch, but at 0.57× the training speed no better after 30 minutes on 2 CPU cores (issue 12's notes).

Crop classifier (``crop=S``; cnnkit's, after the localizer's ``crop`` option and the second stage
of R-CNN detectors, Girshick et al., CVPR 2014): the grid finds the items well and names them less
well, so a second small CNN names them from the input's own pixels. Each image's ``crop_boxes`` best
boxes by objectness, after non-max suppression among them (IoU > 0.5), are cut out of the input
(``torchvision.ops.roi_align``, S×S) and classified (``models.localizer.CropClassifier`` and a
linear layer); the class logits of every anchor whose decoded box overlaps one of those boxes with
IoU > 0.5 (the chosen box's own anchor included) get that crop's logits added. The grid keeps its
shape and meaning, so the loss, the decoding and the evaluation are unchanged; the boxes are chosen
and cut without gradient, the logits learn through the class loss of the assigned anchors.

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

from cnnkit.models.localizer import CropClassifier
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

    #: applied back to back in ``forward``: foldable for inference (``cnnkit.models.fusion``)
    conv_bn_pairs = (("conv", "bn"),)

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


def _conv_bn_leaky(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.1, inplace=True),
    )


def _batched_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of (N, P, 4) and (N, Q, 4) xyxy boxes, image by image → (N, P, Q):
    ``torchvision.ops.box_iou`` (one image's boxes at a time) vectorized over the images by
    ``torch.vmap``."""
    from torchvision.ops import box_iou

    return torch.vmap(box_iou)(a, b)


class TopDown(nn.Module):
    """The top-down path (module docstring) from the deepest of ``channels``' stages down to
    ``stage`` (an index into them, negative from the deepest): stage maps → one (N, ``width``, h, w)
    map at the size of ``maps[stage]``."""

    def __init__(self, channels: Sequence[int], stage: int, width: int) -> None:
        super().__init__()
        self.first = stage % len(channels)
        levels = range(self.first, len(channels))
        self.lateral = nn.ModuleList(nn.Conv2d(channels[i], width, 1) for i in levels)
        self.smooth = nn.ModuleList(_conv_bn_leaky(width, width) for _ in levels[:-1])

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](maps[-1])  # N x width x (deepest map)
        for k in reversed(range(len(self.smooth))):
            fine = maps[self.first + k]
            up = F.interpolate(x, size=fine.shape[-2:], mode="nearest")
            x = self.smooth[k](self.lateral[k](fine) + up)  # N x width x (that stage's map)
        return x


class YOLODetector(nn.Module):
    """Backbone stage map → ``YOLOHead``. Input (N, C, H, W) with H, W multiples of ``stride``
    (any such size: multi-scale training changes it every few batches); output (N, B, H/stride,
    W/stride, 5 + K). ``anchors`` (B, 2) are (w, h) in input pixels; ``stride`` is the backbone
    stage's, in pixels per cell. ``top_down``: merge the deeper stages into it first (module
    docstring; a no-op for the deepest stage). ``multi_scale``: square input sides (multiples of
    ``stride``) that training batches are resized to, a new one every ``multi_scale_every`` batches
    (see the module docstring); empty for none. ``crop``, ``crop_boxes``, ``crop_width``: the crop
    classifier (module docstring; ``in_channels`` are the input's)."""

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
        top_down: bool = False,
        crop: int = 0,
        crop_boxes: int = 8,
        in_channels: int = 1,
        crop_width: int = 32,
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
        deeper = top_down and feature_index % len(channels) < len(channels) - 1
        self.top_down = TopDown(channels, feature_index, hidden_channels) if deeper else None
        truncate = getattr(backbone, "truncate", None)
        if self.top_down is None and callable(truncate):
            # the stages deeper than the head's are never read: drop them (on resnet18_narrow at
            # feature_index=-3, 34% of the detector's FLOPs); built first, so the initialization
            # draws the same numbers as before
            self.feature_index = feature_index % len(channels)
            truncate(self.feature_index + 1)
        head_channels = hidden_channels if self.top_down is not None else channels[feature_index]
        self.head = YOLOHead(head_channels, len(anchor_tensor), num_classes, hidden_channels)
        bad = [size for size in multi_scale if int(size) < self.stride or int(size) % self.stride]
        if bad or multi_scale_every < 1:
            raise ValueError(
                f"YOLODetector: multi_scale={list(multi_scale)}, multi_scale_every="
                f"{multi_scale_every}; expected sides that are positive multiples of the stride "
                f"{self.stride} and a period >= 1"
            )
        if crop < 0 or crop_boxes < 1 or crop_width < 1:
            raise ValueError(
                f"YOLODetector: crop={crop}, crop_boxes={crop_boxes}, crop_width={crop_width}; "
                "expected a crop side >= 0 (0: no crop classifier), at least one box per image "
                "and a width >= 1"
            )
        self.crop_boxes = crop_boxes
        self.crop: CropClassifier | None = None
        self.crop_logits: nn.Linear | None = None
        if crop:
            self.crop = CropClassifier(in_channels, crop, crop_width)
            self.crop_logits = nn.Linear(self.crop.out_channels, num_classes)
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
        maps = self.backbone(x)
        # N x C x H/stride x W/stride
        features = maps[self.feature_index] if self.top_down is None else self.top_down(maps)
        grid = self.head(features)  # N x B x H/stride x W/stride x (5+K)
        return grid if self.crop is None else self.classify_crops(x, grid)

    def chosen_boxes(self, boxes: torch.Tensor, objectness: torch.Tensor) -> torch.Tensor:
        """(N, A, 4) decoded boxes and (N, A) objectness → (N, M) indices of each image's
        ``crop_boxes`` best boxes after NMS among them (IoU > 0.5), padded with the next best of
        the suppressed ones when fewer survive. One ``batched_nms`` for the whole batch (the image
        as the group), no loop over the images."""
        from torchvision.ops import batched_nms

        n, anchors = objectness.shape
        m = min(self.crop_boxes, anchors)
        top = objectness.topk(min(4 * m, anchors), dim=1).indices  # N x P, by descending score
        p = top.shape[1]
        candidates = boxes.gather(1, top[..., None].expand(-1, -1, 4)).reshape(-1, 4).float()
        scores = objectness.gather(1, top).reshape(-1).float()
        image = torch.arange(n, device=top.device).repeat_interleave(p)
        suppressed = torch.ones(n * p, dtype=torch.long, device=top.device)
        suppressed[batched_nms(candidates, scores, image, 0.5)] = 0
        # within each image: the kept ones by score, then the suppressed ones by score
        rank = suppressed.view(n, p) * p + torch.arange(p, device=top.device)
        return top.gather(1, rank.argsort(dim=1)[:, :m])

    def classify_crops(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """``grid`` with the crop classifier's logits added to the class logits of the anchors
        whose boxes overlap the chosen boxes (module docstring)."""
        # lazily: cnnkit.detection imports cnnkit.models, not the other way round
        from torchvision.ops import clip_boxes_to_image

        from cnnkit.detection.yolo import decode_outputs

        assert self.crop is not None and self.crop_logits is not None
        anchors = self.anchors
        assert isinstance(anchors, torch.Tensor)  # a buffer
        n, _, _, _, depth = grid.shape
        with torch.no_grad():
            boxes, objectness, _ = decode_outputs(grid.detach(), anchors, self.stride)
            boxes = clip_boxes_to_image(boxes.reshape(n, -1, 4), tuple(x.shape[-2:]))
            objectness = objectness.reshape(n, -1)  # N x A
            chosen = self.chosen_boxes(boxes, objectness)  # N x M
            picked = boxes.gather(1, chosen[..., None].expand(-1, -1, 4))  # N x M x 4
            best, owner = _batched_iou(boxes, picked).max(dim=2)  # N x A: the best chosen box
            member = (best > 0.5).to(grid.dtype)[..., None]  # N x A x 1
        m = chosen.shape[1]
        images = torch.arange(n, device=x.device).repeat_interleave(m)
        logits = self.crop_logits(self.crop(x, picked.reshape(-1, 4), images)).view(n, m, -1)
        added = logits.to(grid.dtype).gather(1, owner[..., None].expand(-1, -1, logits.shape[2]))
        flat = grid.reshape(n, -1, depth)
        flat = torch.cat([flat[..., :5], flat[..., 5:] + added * member], dim=2)
        return flat.view(grid.shape)  # N x B x H/stride x W/stride x (5+K)


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
    top_down: bool = False,
    crop: int = 0,
    crop_boxes: int = 8,
    crop_width: int = 32,
) -> YOLODetector:
    """A YOLO-style detector on a zoo backbone (default: the notes' Fashion-MNIST CNN, whose last
    stage is at stride 4: a 32×32 grid on 128×128 scenes) with B = len(anchors) anchors per cell;
    ``multi_scale`` sides for YOLOv2's multi-scale training (e.g. ``[96, 112, 128, 144, 160]`` on
    128×128 scenes); ``top_down`` merges the deeper stages into the head's (YOLOv3's path);
    ``crop`` (a side in pixels, 0: off) adds the crop classifier on ``crop_boxes`` boxes per image,
    its first convolutions ``crop_width`` wide."""
    features = create_model(backbone, in_channels=in_channels, features_only=True)
    return YOLODetector(
        features, num_classes, anchors, feature_index, hidden_channels,
        multi_scale, multi_scale_every, multi_scale_seed, top_down, crop, crop_boxes,
        in_channels, crop_width,
    )  # fmt: skip
