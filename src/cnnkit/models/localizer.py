"""Classification + localization (Géron, *Hands-On Machine Learning*, ch. 14, "Classification and
Localization"): one object per image, its class and its bounding box, from two heads on any zoo
backbone.

The notes' model is Xception without its top, global average pooling, then a softmax dense layer
(the class) and a 4-unit dense layer (the box), trained with cross-entropy + MSE weighted 0.8 / 0.2.
Here the backbone is any registered classifier built with ``features_only=True``
(:func:`cnnkit.models.features.create_backbone`); its last stage map feeds the heads.

Contract (the registry's ``"localize"`` task): input (N, in_channels, H, W), any H and W the backbone
accepts; output ``{"logits": (N, num_classes), "boxes": (N, 4)}``: class logits (softmax left to the
loss) and four box numbers in the localize task's *encoding* (``cnnkit.tasks.localize``:
``(cx, cy, sqrt(w), sqrt(h))`` of the box normalized by the image size, or ``(cx, cy, w, h)`` with
``box_encoding="plain"``). The model applies no activation to the box numbers; it does not know the
encoding, only that the first two are the box centre in [0, 1] image coordinates.

Deliberate difference from the notes, ``centre="soft-argmax"`` (the default): global average
pooling "drops any remaining spatial info" (the notes' own words, on GoogLeNet), so on a backbone
whose receptive field is smaller than the image (the Fashion-MNIST CNN sees 34 pixels of a 128-pixel
scene) the pooled features cannot say *where* the object is, and a dense layer on them predicts about
the same centre for every image. The centre is therefore read from the map itself, as the
differentiable spatial-to-numerical transform of Nibali et al. ("Numerical Coordinate Regression with
Convolutional Neural Networks", arXiv:1801.07372, 2018; the spatial soft-argmax of Levine et al.,
JMLR 2016): a 1×1 convolution scores every cell, a softmax over the cells turns the scores into
weights, and the centre is the weighted mean of the cells' centres, so it is in [0, 1] by
construction. Class and size, which do not depend on where the object is, come from the pooled
features as in the notes. ``centre="pooled"`` is the notes' head exactly (a dense layer of 4 on the
pooled features), kept for comparison and for backbones that see the whole image.

``centre="dense"`` goes one step further, for small maps: on ``resnet18_narrow`` at 128 px the last
stage is 4×4 cells of 32 px, and a weighted mean of 16 cell centres placed boxes no better than a
mean IoU of 0.67 (measured, ``docs/notes/issue-11.md``). The dense head reads a finer stage
(``box_stage``, default the stride-8 one: 16×16 cells) merged with the last stage as a feature
pyramid's top-down path does (Lin et al., "Feature Pyramid Networks for Object Detection", CVPR
2017: a 1×1 lateral convolution plus the upsampled deeper map, then a 3×3 convolution), and every
cell predicts the four box numbers itself — its centre as an offset from the cell's centre in cell
units, and the size — as one-object detectors do (CenterNet, Zhou et al. 2019). The softmax of the
cells' scores weights those predictions into one box, so the output is still four numbers in the
task's encoding and the loss is the notes' MSE. The class reads the last stage's pooled features
beside the same weights' pooling of the merged map (the features where the object is).

``crop=S`` (dense head only) adds a second look at the object, as two-stage detectors classify a
region (Faster R-CNN's RoI head; He et al.'s RoIAlign, ``torchvision.ops.roi_align``): the input
image inside the predicted box is resampled to S×S — items of every scale come out the size of a
Fashion-MNIST item — and a small CNN on that crop adds its pooled features to the classifier's
input. The box is detached (the crop teaches the class, not the box). Why: with the GIoU term the
box reached a mean IoU of 0.91 in 15 minutes while the class stayed at 86% (one classifier for items
from 21 to 84 pixels on a 4×4 map); the crop removes the scale from the classifier's problem. The
model must decode its box for this, so it takes the task's ``box_encoding``.

``backbone_input=S`` (with ``crop``) lets the backbone find the box on the image downscaled to S×S
(bilinear, antialiased) while the crop is cut from the full-resolution input: once the crop
classifies, the backbone only has to place the box, and a box is placed well enough from a quarter
of the pixels (the box numbers are normalized, so nothing else changes). On two CPU cores the
backbone is most of the compute, so the same budget sees about three times the images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnkit.models.features import create_backbone
from cnnkit.models.registry import register_model

CENTRES = ("soft-argmax", "pooled", "dense")


class SoftArgmaxCentre(nn.Module):
    """(N, C, h, w) features → (N, 2) centre ``(cx, cy)`` in [0, 1]: a softmax over the cells of a
    1×1 convolution's scores weights the normalized cell centres ``((j + ½) / w, (i + ½) / h)``
    (Nibali et al. 2018's DSNT). The scores start at zero, so training starts from the image centre."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Conv2d(channels, 1, 1)
        for parameter in self.score.parameters():
            nn.init.zeros_(parameter)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n, _, h, w = features.shape
        weights = self.score(features).float().flatten(1).softmax(1).view(n, h, w)
        xs = (torch.arange(w, device=features.device, dtype=weights.dtype) + 0.5) / w
        ys = (torch.arange(h, device=features.device, dtype=weights.dtype) + 0.5) / h
        cx = (weights.sum(1) * xs).sum(1)  # the weights summed over rows: one per column
        cy = (weights.sum(2) * ys).sum(1)
        return torch.stack([cx, cy], dim=1)


def weighted_cell_box(weights: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """One box (N, 4) from every cell's box: ``weights`` (N, h·w) sum to 1 over the cells (row-major),
    ``cells`` (N, 4, h, w) hold each cell's ``(dx, dy, size_x, size_y)``: the centre is the cell's
    centre ``((j + ½) / w, (i + ½) / h)`` plus ``(dx / w, dy / h)`` (offsets in cell units), the size
    is passed through in the task's encoding; the weighted mean of the cells' boxes is the box."""
    n, _, h, w = cells.shape
    cells = cells.flatten(2)  # N x 4 x hw
    xs = (torch.arange(w, device=cells.device, dtype=cells.dtype) + 0.5) / w
    ys = (torch.arange(h, device=cells.device, dtype=cells.dtype) + 0.5) / h
    cx = xs.repeat(h) + cells[:, 0] / w  # row-major: x varies fastest
    cy = ys.repeat_interleave(w) + cells[:, 1] / h
    per_cell = torch.stack([cx, cy, cells[:, 2], cells[:, 3]], dim=1)
    return (per_cell * weights.unsqueeze(1)).sum(2)


class DenseBoxHead(nn.Module):
    """Stage maps → (box (N, 4), attention-pooled features (N, width)) — ``centre="dense"`` (module
    docstring). ``stage`` indexes the maps (negative from the deepest); the deepest map is merged into
    it top-down (upsampled, nearest, to its size). Scores and offsets start at zero, so training
    starts from the mean of the cells' size predictions at the image centre."""

    def __init__(self, channels: list[int], stage: int, width: int = 64) -> None:
        super().__init__()
        self.stage = stage
        self.lateral = nn.Conv2d(channels[stage], width, 1)
        self.top = nn.Conv2d(channels[-1], width, 1)
        self.smooth = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.score = nn.Conv2d(width, 1, 1)
        self.box = nn.Conv2d(width, 4, 1)  # per cell: (dx, dy) in cell units, then the size
        for conv in (self.score, self.box):
            for parameter in conv.parameters():
                nn.init.zeros_(parameter)

    def forward(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        fine, deepest = maps[self.stage], maps[-1]
        top = nn.functional.interpolate(self.top(deepest), size=fine.shape[-2:], mode="nearest")
        merged = self.smooth(self.lateral(fine) + top)  # N x width x h x w
        weights = self.score(merged).float().flatten(1).softmax(1)  # N x hw
        box = weighted_cell_box(weights, self.box(merged).float())
        pooled = (merged.float().flatten(2) * weights.unsqueeze(1)).sum(2)  # N x width
        return box, pooled.to(merged.dtype)


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]


class CropClassifier(nn.Module):
    """The input inside each box, resampled to ``size``×``size`` (``torchvision.ops.roi_align``,
    ``aligned=True``: pixel centres at half-integers, cnnkit's continuous box convention) → a small
    CNN (3×3 convolutions w, w, pool, 2w, 2w, pool, 4w, global average pool; w = ``width``, 32 by
    default) → (N, 4w)."""

    def __init__(self, in_channels: int, size: int, width: int = 32) -> None:
        super().__init__()
        self.size = size
        self.out_channels = 4 * width
        self.net = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            *_conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            *_conv_bn_relu(2 * width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(2 * width, self.out_channels),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def crops(
        self, x: torch.Tensor, boxes: torch.Tensor, images: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, C, H, W) images and (R, 4) xyxy pixel boxes → (R, C, size, size); box r is in image
        ``images[r]`` (default: box i in image i, R = N)."""
        from torchvision.ops import roi_align

        if images is None:
            images = torch.arange(len(x), device=x.device)
        rois = torch.cat([images.to(x.dtype)[:, None], boxes.to(x.dtype)], 1)
        return roi_align(x, rois, self.size, sampling_ratio=2, aligned=True)

    def forward(
        self, x: torch.Tensor, boxes: torch.Tensor, images: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.net(self.crops(x, boxes, images))


class Localizer(nn.Module):
    """A backbone's last stage → global average pooling → class logits and box size; the box centre
    from the map by soft-argmax (or, with ``centre="pooled"``, all four box numbers from the pooled
    features, the notes' head).

    Args:
        backbone: a registered classification model, built with ``features_only=True``.
        centre: ``"soft-argmax"``, ``"pooled"`` or ``"dense"`` (see the module docstring).
        box_stage: ``centre="dense"`` only: the stage map the box is read from (an index into the
            backbone's stages, negative from the deepest; default -3, stride 8 on the ResNets).
        crop: ``centre="dense"`` only: the side of the crop of the predicted box that a second
            small CNN classifies (0: none; see the module docstring).
        box_encoding: the task's size encoding (``"sqrt"`` or ``"plain"``), used only to crop.
        backbone_input: with ``crop``: the side of the square the input is downscaled to for the
            backbone (0: the input as it is).
        backbone_options: more options for the backbone's builder (JSON, recorded in ``config.json``).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        backbone: str = "fashion_cnn",
        centre: str = "soft-argmax",
        backbone_options: dict[str, Any] | None = None,
        box_stage: int = -3,
        crop: int = 0,
        box_encoding: str = "sqrt",
        backbone_input: int = 0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"Localizer: num_classes={num_classes}; expected at least 1")
        if centre not in CENTRES:
            raise ValueError(f"Localizer: centre={centre!r}; expected one of {', '.join(CENTRES)}")
        self.backbone, info = create_backbone(backbone, in_channels, **(backbone_options or {}))
        self.feature_info = info
        channels = info[-1]["channels"]
        self.num_classes, self.centre_mode = num_classes, centre
        self.dense: DenseBoxHead | None = None
        if centre == "dense":
            stages = [stage["channels"] for stage in info]
            if not -len(stages) <= box_stage < len(stages):
                raise ValueError(
                    f"Localizer: box_stage={box_stage} but backbone {backbone!r} has "
                    f"{len(stages)} stages; expected an index in [{-len(stages)}, {len(stages) - 1}]"
                )
            self.dense = DenseBoxHead(stages, box_stage)
            channels_in = channels + self.dense.score.in_channels
        else:
            channels_in = channels
        if crop < 0 or (crop and centre != "dense"):
            raise ValueError(
                f"Localizer: crop={crop} with centre={centre!r}; expected 0, or a crop side > 0 "
                "with centre='dense'"
            )
        if backbone_input < 0 or (backbone_input and not crop):
            raise ValueError(
                f"Localizer: backbone_input={backbone_input} with crop={crop}; expected 0, or a "
                "size > 0 with a crop (the crop classifies at full resolution)"
            )
        self.box_encoding, self.backbone_input = box_encoding, backbone_input
        self.crop: CropClassifier | None = CropClassifier(in_channels, crop) if crop else None
        if self.crop is not None:
            channels_in += self.crop.out_channels
        self.classifier = nn.Linear(channels_in, num_classes)
        self.centre: nn.Module | None = None
        if centre == "dense":
            self.box: nn.Module = nn.Identity()  # the dense head holds the box
        elif centre == "soft-argmax":
            self.centre = SoftArgmaxCentre(channels)
            self.box = nn.Linear(channels, 2)  # the size: (sqrt(w), sqrt(h)) or (w, h)
        else:
            self.box = nn.Linear(channels, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        seen = x
        if self.backbone_input:
            side = (self.backbone_input, self.backbone_input)
            seen = nn.functional.interpolate(x, side, mode="bilinear", antialias=True)
        maps = self.backbone(seen)
        features = maps[-1]  # N x C x h x w, the last stage
        pooled = features.mean((2, 3))  # N x C
        if self.dense is not None:
            box, attended = self.dense(maps)
            looks = [pooled, attended.to(pooled.dtype)]
            if self.crop is not None:
                looks.append(self.crop(x, self._pixel_boxes(box.detach(), x)).to(pooled.dtype))
            logits = self.classifier(torch.cat(looks, dim=1))
            return {"logits": logits, "boxes": box.to(logits.dtype)}
        boxes = self.box(pooled)  # N x 2 (size) or N x 4
        if self.centre is not None:
            boxes = torch.cat([self.centre(features).to(boxes.dtype), boxes], dim=1)  # N x 4
        return {"logits": self.classifier(pooled), "boxes": boxes}

    def _pixel_boxes(self, encoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # the task's one conversion (detection/boxes.py), imported here because detection/ sits
        # below models/ (it imports the model package); by then both are loaded
        from cnnkit.detection.boxes import decode_localization

        boxes = decode_localization(encoded.float(), (x.shape[-2], x.shape[-1]), self.box_encoding)
        return boxes.clamp(min=0).minimum(boxes.new_tensor([x.shape[-1], x.shape[-2]] * 2))


@register_model(
    input_size=(1, 128, 128),
    min_size=28,
    classifier="classifier",
    paper="Géron, Hands-On Machine Learning (2019), ch. 14, 'Classification and Localization'",
    task="localize",
)
def localizer(
    num_classes: int = 10,
    in_channels: int = 1,
    backbone: str = "fashion_cnn",
    centre: str = "soft-argmax",
    backbone_options: dict[str, Any] | None = None,
    box_stage: int = -3,
    crop: int = 0,
    box_encoding: str = "sqrt",
    backbone_input: int = 0,
) -> Localizer:
    """Class + box heads on ``backbone``'s stage features (defaults: the notes' Fashion-MNIST CNN on
    1-channel 128×128 scenes, ``cnnkit.data.scenes``)."""
    return Localizer(
        num_classes, in_channels, backbone, centre, backbone_options, box_stage, crop, box_encoding,
        backbone_input,
    )  # fmt: skip
