"""Augmentation of whole batches: random crop with padding, horizontal flip and random erasing,
each with its own random parameters *per image*, in a few tensor operations per batch.

Why hand-written: ``torchvision.transforms.v2`` applied to a batch tensor draws ONE set of
parameters per call (one crop offset, one flip decision, one erased rectangle for the whole batch),
and per image it means a Python loop over samples — exactly the per-sample work that in-memory
batches (``TensorBatches``) avoid. Fast-training recipes (airbench) augment whole batches on the
device; this module is that, for NCHW batches of any dtype (uint8 as stored, or float).

Each operation is a pure function of its parameters (:func:`translate`, :func:`mirror`,
:func:`erase_rectangles`) and the parameters are drawn from a ``torch.Generator`` on the CPU
(:func:`draw_offsets`, :func:`draw_mirror`, :func:`draw_erase_boxes`), so a batch augments the
same way on every device and a seeded run is reproducible. :class:`BatchAugment` chains them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: ``--batch-augment`` names and their defaults: airbench's 2-pixel translation, torchvision's
#: RandomErasing probability 0.5
DEFAULT_CROP_PADDING = 2
DEFAULT_ERASE_PROBABILITY = 0.5
#: torchvision.transforms.v2.RandomErasing's defaults: the erased area's share of the image and
#: the rectangle's aspect ratio (height / width) range
ERASE_SCALE = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)
_ERASE_TRIES = 10  # RandomErasing tries 10 rectangles and erases nothing when none fits


def _check_batch(images: torch.Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"images: expected a batch (N, C, H, W), got shape {tuple(images.shape)}")


# ---- random crop with padding ---------------------------------------------------------------------
def draw_offsets(n: int, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per image the window's (top, left) in the padded image: int64 (n, 2) in ``[0, 2·padding]``."""
    return torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)


def translate(
    images: torch.Tensor, padding: int, offsets: torch.Tensor, fill: float = 0.0
) -> torch.Tensor:
    """Pad each image by ``padding`` pixels of ``fill`` on every side and cut its H × W window at
    ``offsets[i] = (top, left)``: a random crop with padding (a translation by up to ``padding``).

    One gather over the flattened padded batch: the window's pixel (y, x) of image i is the padded
    pixel (top_i + y, left_i + x), an index computed for the whole batch at once."""
    _check_batch(images)
    if padding == 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding), value=fill)
    wp = w + 2 * padding
    offsets = offsets.to(images.device)
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # N x H
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # N x W
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, index).view(n, c, h, w)


# ---- horizontal flip ------------------------------------------------------------------------------
def draw_mirror(n: int, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Which images to mirror: bool (n,), each True with probability ``p``."""
    return torch.rand(n, generator=generator) < p


def mirror(images: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """The images with ``which[i]`` True mirrored left–right, the others as they are."""
    _check_batch(images)
    which = which.to(images.device).view(-1, 1, 1, 1)
    return torch.where(which, images.flip(3), images)


# ---- random erasing -------------------------------------------------------------------------------
def draw_erase_boxes(
    n: int,
    height: int,
    width: int,
    p: float = DEFAULT_ERASE_PROBABILITY,
    scale: tuple[float, float] = ERASE_SCALE,
    ratio: tuple[float, float] = ERASE_RATIO,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per image the rectangle to erase as int64 (n, 4) ``(top, left, h, w)``; ``h = w = 0`` for
    none. As ``torchvision.transforms.v2.RandomErasing`` draws it, for every image at once: with
    probability ``p``, up to 10 candidates of area ``scale`` × H·W (uniform) and aspect ratio h/w
    log-uniform in ``ratio``, sides rounded; the first that fits strictly inside the image
    (h < H, w < W) is placed uniformly; none fitting, nothing is erased."""
    if not (0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1]):
        raise ValueError(f"erase: expected 0 < scale and ratio ranges, got {scale} and {ratio}")
    apply = torch.rand(n, generator=generator) < p
    share = scale[0] + (scale[1] - scale[0]) * torch.rand(n, _ERASE_TRIES, generator=generator)
    area = height * width * share
    low, high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(low + (high - low) * torch.rand(n, _ERASE_TRIES, generator=generator))
    h = torch.sqrt(area * aspect).round().long()
    w = torch.sqrt(area / aspect).round().long()
    fits = (h < height) & (w < width)
    first = fits.long().argmax(1)  # the first candidate that fits (0 when none does)
    pick = torch.arange(n)
    h, w = h[pick, first], w[pick, first]
    keep = apply & fits.any(1)
    h, w = torch.where(keep, h, 0), torch.where(keep, w, 0)
    position = torch.rand(n, 2, generator=generator)
    top = (position[:, 0] * (height - h + 1)).long()
    left = (position[:, 1] * (width - w + 1)).long()
    return torch.stack([top, left, h, w], 1)


def erase_rectangles(images: torch.Tensor, boxes: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """Each image with its rectangle ``boxes[i] = (top, left, h, w)`` set to ``value`` (every
    channel); a rectangle of zero size erases nothing."""
    _check_batch(images)
    n, _, height, width = images.shape
    top, left, h, w = boxes.to(images.device).unbind(1)
    ys = torch.arange(height, device=images.device).view(1, -1, 1)
    xs = torch.arange(width, device=images.device).view(1, 1, -1)
    inside = (
        (ys >= top.view(-1, 1, 1))
        & (ys < (top + h).view(-1, 1, 1))
        & (xs >= left.view(-1, 1, 1))
        & (xs < (left + w).view(-1, 1, 1))
    )  # N x H x W
    return images.masked_fill(inside.unsqueeze(1), value)


# ---- the chain --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchAugment:
    """Batch augmentation in the order crop → flip → erase, per-image parameters drawn from one
    generator in that order.

    ``crop_padding``: random crop with this much padding (0: no crop), the padding filled with
    ``fill``; ``flip``: mirror each image with probability 1/2; ``erase``: the probability of
    erasing a rectangle (0: none) of ``erase_scale`` and ``erase_ratio`` with ``erase_value``.
    Values are in the units of the batch: on a uint8 batch (``TensorBatches`` augments images as
    stored, before normalization) ``fill = erase_value = 0`` is black, Fashion-MNIST's background.
    """

    crop_padding: int = 0
    flip: bool = False
    erase: float = 0.0
    erase_scale: tuple[float, float] = ERASE_SCALE
    erase_ratio: tuple[float, float] = ERASE_RATIO
    erase_value: float = 0.0
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(
                f"crop: expected a padding of 0 or more pixels, got {self.crop_padding}"
            )
        if not 0.0 <= self.erase <= 1.0:
            raise ValueError(f"erase: expected a probability from 0 to 1, got {self.erase}")

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.flip or self.erase)

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        _check_batch(images)
        n, _, height, width = images.shape
        if self.crop_padding:
            offsets = draw_offsets(n, self.crop_padding, generator)
            images = translate(images, self.crop_padding, offsets, self.fill)
        if self.flip:
            images = mirror(images, draw_mirror(n, generator))
        if self.erase:
            boxes = draw_erase_boxes(
                n, height, width, self.erase, self.erase_scale, self.erase_ratio, generator
            )
            images = erase_rectangles(images, boxes, self.erase_value)
        return images

    def spec(self) -> str:
        """The ``--batch-augment`` text that gives this augmentation (``""`` for none)."""
        parts = []
        if self.crop_padding:
            parts.append(f"crop={self.crop_padding}")
        if self.flip:
            parts.append("flip")
        if self.erase:
            parts.append(f"erase={self.erase:g}")
        return ",".join(parts)

    @classmethod
    def parse(cls, text: str) -> BatchAugment:
        """``"crop,flip,erase"``, ``"crop=4,erase=0.25"``…: ``crop[=PADDING]`` (default 2 pixels,
        airbench's translation), ``flip``, ``erase[=P]`` (default probability 0.5, torchvision's)."""
        crop, flip, erase_p = 0, False, 0.0
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            try:
                if name == "crop":
                    crop = int(value) if sep else DEFAULT_CROP_PADDING
                elif name == "flip" and not sep:
                    flip = True
                elif name == "erase":
                    erase_p = float(value) if sep else DEFAULT_ERASE_PROBABILITY
                else:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"--batch-augment: {item!r} is not one of crop[=PADDING], flip, erase[=P] "
                    f"(in {text!r})"
                ) from None
        return cls(crop_padding=crop, flip=flip, erase=erase_p)
