"""Image preprocessing that a set of pretrained weights expects: resize, crop, scale, normalize.

The notes resize with ``tf.image.resize`` (which stretches) and mention ``crop_and_resize`` to keep the
aspect ratio; ``crop`` chooses between the three ways:

- ``"center"``: the evaluation crop the weights were measured with. For TensorFlow's EfficientNet this
  is ``_decode_and_center_crop`` of ``tensorflow/tpu/models/official/efficientnet/preprocessing.py``:
  a centered square of side ``int(crop_pct * min(H, W))`` (``crop_pct = 224 / (224 + 32)``, offset
  ``(H - side + 1) // 2``), then resized to 224×224. Objects near the border may be cut off.
- ``"pad"``: the whole image, its longer side resized to the target and the shorter one padded with
  the normalization mean (so the padding is 0 after normalization, the network's "no signal").
- ``"stretch"``: the whole image resized to the target square, distorting the aspect ratio.

Resizing uses ``torchvision.transforms.v2.functional.resize`` with ``antialias=True``. TensorFlow's
reference resize does not antialias; on the four sample photos (docs/notes/issue-6.md) antialiasing
moved the probability of the sensible classes by at most 5 points either way and never changed the
top-1 class, and it keeps strongly downscaled images free of aliasing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

CROPS = ("center", "pad", "stretch")
_INTERPOLATIONS = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class Preprocess:
    """Callable: a PIL image or an H×W×3 (or H×W) uint8 array → the 3×size×size float32 tensor.

    ``mean`` and ``std`` are on the 0-255 scale of the pixels (TensorFlow's ``MEAN_RGB`` convention),
    so ``(pixel - mean) / std`` is the network's input.
    """

    size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    interpolation: str = "bilinear"
    crop: str = "center"

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"crop={self.crop!r}; expected one of {', '.join(CROPS)}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"interpolation={self.interpolation!r}; expected one of {', '.join(_INTERPOLATIONS)}"
            )
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct={self.crop_pct}; expected a fraction in (0, 1]")

    def with_crop(self, crop: str) -> Preprocess:
        """The same preprocessing with another aspect-ratio policy."""
        return Preprocess(self.size, self.crop_pct, self.mean, self.std, self.interpolation, crop)

    def to_uint8(self, image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
        """The image as a 3×H×W uint8 tensor (grey is repeated, alpha dropped)."""
        if isinstance(image, Image.Image):
            return TF.pil_to_tensor(image.convert("RGB"))
        array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.dtype != np.uint8:
            raise ValueError(
                f"image: expected uint8 pixels (0-255), got dtype {array.dtype}; "
                "convert float images with (image * 255).round().astype(np.uint8)"
            )
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"image: expected H×W, H×W×3 or H×W×4, got shape {array.shape}")
        # np.array copies: the caller's array may be read-only (skimage's are) or a strided view.
        return torch.from_numpy(np.array(array[:, :, :3])).permute(2, 0, 1)

    def geometry(self, pixels: torch.Tensor) -> torch.Tensor:
        """Crop/resize a 3×H×W uint8 tensor to 3×size×size uint8, by the ``crop`` policy."""
        height, width = pixels.shape[-2:]
        mode = _INTERPOLATIONS[self.interpolation]
        if self.crop == "center":
            side = max(1, int(self.crop_pct * min(height, width)))  # a 1-pixel side stays 1
            top, left = (height - side + 1) // 2, (width - side + 1) // 2
            pixels = TF.crop(pixels, top, left, side, side)
            return TF.resize(pixels, [self.size, self.size], mode, antialias=True)
        if self.crop == "stretch":
            return TF.resize(pixels, [self.size, self.size], mode, antialias=True)
        scale = self.size / max(height, width)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        pixels = TF.resize(pixels, [new_h, new_w], mode, antialias=True)
        pad_top, pad_left = (self.size - new_h) // 2, (self.size - new_w) // 2
        canvas = torch.empty(3, self.size, self.size, dtype=torch.uint8)
        canvas[:] = torch.tensor([round(m) for m in self.mean], dtype=torch.uint8)[:, None, None]
        canvas[:, pad_top : pad_top + new_h, pad_left : pad_left + new_w] = pixels
        return canvas

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (…×3×H×W) → float32 ``(pixel - mean) / std``."""
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (pixels.float() - mean) / std

    def __call__(self, image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.normalize(self.geometry(self.to_uint8(image)))

    @property
    def mean_01(self) -> tuple[float, ...]:
        """``mean`` on the 0-1 scale, as ``torchvision.transforms.v2.Normalize`` takes it."""
        return tuple(m / 255 for m in self.mean)

    @property
    def std_01(self) -> tuple[float, ...]:
        return tuple(s / 255 for s in self.std)
