"""The one image decoder of cnnkit: a file → uint8 (C, H, W), upright, 8 bits, RGB or grey.

Every place that decodes an image file (``cnnkit predict``, image-folder datasets, annotated
datasets, the annotation readers' image sizes) goes through :func:`read_image` or
:func:`image_size`, so they agree on four conventions:

- **Orientation**: the EXIF ``Orientation`` tag is applied (``PIL.ImageOps.exif_transpose``), so a
  phone photo stored sideways with orientation 6 comes out upright, as every viewer and annotation
  tool shows it; :func:`image_size` reports the size after that rotation.
- **Bit depth**: 16-bit grey images (Pillow modes ``I;16``, ``I;16L``, ``I;16B``, and ``I`` holding
  16-bit samples) are scaled to 8 bits as the PNG specification's sample-depth rescaling says
  (W3C PNG, 2nd ed., §13.12: ``round(v * 255 / 65535)``), not clipped: 65535 → 255, 32768 → 128.
- **Colour**: any mode Pillow reads (palette, grey+alpha, RGBA, CMYK, YCbCr, ...) is converted to
  ``RGB`` or ``L``; alpha is dropped (the stored colour under it is kept).
- **Size limit**: an image of more than ``2 * PIL.Image.MAX_IMAGE_PIXELS`` pixels (178,956,970 by
  default, the size at which Pillow itself refuses a decompression bomb) raises
  :class:`ImageTooLargeError` stating the image's size and the limit, before any pixel is decoded.

Pillow rather than ``torchvision.io``: torchvision 0.29 deprecates its decoders, and Pillow reads more
formats (BMP, TIFF, GIF, WebP) and converts every colour mode. Any failure is an
:class:`ImageDecodeError` (a ``ValueError``) whose message starts with the file's path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

MODES = ("RGB", "L")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_EXIF_ORIENTATION = 0x0112  # the EXIF tag; values 5-8 swap width and height


class ImageDecodeError(ValueError):
    """A file that is not a decodable image; ``path`` names it, the message says why."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


class ImageTooLargeError(ImageDecodeError):
    """An image with more pixels than :func:`pixel_limit` (a possible decompression bomb)."""


def pixel_limit() -> int | None:
    """The largest image cnnkit decodes, in pixels: ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's own
    refusal threshold, read at call time so a program that raises Pillow's limit raises ours);
    None when Pillow's limit is switched off."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def _too_large(path: Path, bomb: Exception) -> ImageTooLargeError:
    """Pillow's ``DecompressionBombError`` (raised by ``Image.open`` from the header alone) as a
    message that says what was found and what the limit is."""
    found = re.search(r"\((\d+) pixels\)", str(bomb))
    shown = f"{int(found.group(1)):,} pixels" if found else f"too large ({bomb})"
    return ImageTooLargeError(
        path,
        f"the image is {shown}, larger than the limit of {pixel_limit() or 0:,} pixels "
        "(2 x PIL.Image.MAX_IMAGE_PIXELS, a guard against decompression bombs); "
        "raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file",
    )


def _open(path: Path) -> Image.Image:
    """``Image.open`` with every failure an :class:`ImageDecodeError` naming ``path``."""
    if not path.is_file():
        raise ImageDecodeError(path, "no such file" if not path.exists() else "not a file")
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except Exception as exc:  # Pillow's plugins raise OSError, SyntaxError, struct.error, ...
        raise ImageDecodeError(
            path,
            f"not a decodable image ({type(exc).__name__}: {exc}); "
            "expected PNG, JPEG, GIF, WebP, BMP or TIFF",
        ) from None
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise ImageDecodeError(path, f"the image is {width}x{height}: it has no pixels")
    return image


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value) if isinstance(value, int) else 1
    except Exception:  # a malformed EXIF block: treat the image as upright, as viewers do
        return 1


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of the image as :func:`read_image` returns it (after the EXIF rotation),
    read from the header without decoding the pixels."""
    path = Path(path)
    with _open(path) as image:
        width, height = image.size
        return (height, width) if _orientation(image) in (5, 6, 7, 8) else (width, height)


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit grey → 8-bit ``L`` by the PNG rescaling ``floor(v * 255 / 65535 + 1/2)``."""
    samples = np.asarray(image).astype(np.int64).clip(0, 65535)
    return Image.fromarray(((samples * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def read_image(
    path: str | os.PathLike, mode: str = "RGB", *, draft: int | None = None
) -> torch.Tensor:
    """Decode an image file to a uint8 tensor (3, H, W) for ``mode="RGB"`` or (1, H, W) for ``"L"``.

    Upright (EXIF orientation applied), 16-bit samples scaled to 8 bits, any colour mode converted
    (see the module docstring). ``draft``: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale so that its
    shorter side stays at least ``draft`` pixels (much faster than decoding and then resizing).

    Raises :class:`ImageTooLargeError` past :func:`pixel_limit` and :class:`ImageDecodeError`
    (both ``ValueError``) for a missing, unreadable or truncated file, the path first in the message.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    path = Path(path)
    with _open(path) as opened:
        try:
            image: Image.Image = opened
            if draft is not None and image.format == "JPEG":
                image.draft(mode, (draft, draft))
            if _orientation(image) != 1:
                image = ImageOps.exif_transpose(image) or image
            if image.mode in _SIXTEEN_BIT:
                image = _to_8_bit(image)
            elif image.mode == "F":
                raise ImageDecodeError(
                    path,
                    "32-bit float samples (mode F) have no agreed 0-255 scale; save 8 or 16 bit",
                )
            elif image.mode == "P" and "transparency" in image.info:
                image = image.convert(
                    "RGBA"
                )  # Pillow warns when a palette+transparency goes to RGB
            pixels = np.array(image.convert(mode), dtype=np.uint8)
        except ImageDecodeError:
            raise
        except Exception as exc:  # truncated data, bad chunks: OSError, SyntaxError, EOFError, ...
            raise ImageDecodeError(
                path, f"not a decodable image ({type(exc).__name__}: {exc})"
            ) from None
    tensor = torch.from_numpy(pixels)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def mode_for_channels(channels: int) -> str:
    """``"L"`` for 1 channel, ``"RGB"`` for 3."""
    if channels not in (1, 3):
        raise ValueError(f"channels={channels}: expected 1 (grey) or 3 (RGB)")
    return "L" if channels == 1 else "RGB"
