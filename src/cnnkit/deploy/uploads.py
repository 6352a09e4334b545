"""Checking an uploaded image before and while it is decoded (``cnnkit serve``).

An upload is refused, with a message a person can act on, when it is:

- larger than ``max_bytes`` (checked while reading, so a huge upload is never held whole);
- not an image by its *content* (its name and declared type are ignored): Pillow identifies it,
  restricted to the formats in :data:`FORMATS`, so no other decoder ever sees the bytes;
- a decompression bomb: its header declares more than ``max_pixels`` pixels (checked before any
  pixel is decoded; Pillow's own bomb warning is turned into a refusal too);
- truncated or corrupt: decoding fails (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import torch

#: formats the app decodes (Pillow's names)
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000  # ~ 7700 × 5200: a large photograph, well below a bomb


class UploadError(ValueError):
    """An upload that is refused; its message is shown on the page."""


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS


def decode_upload(
    data: bytes, channels: int, limits: UploadLimits = UploadLimits()
) -> torch.Tensor:
    """Checked bytes of an uploaded file → uint8 (channels, H, W); :class:`UploadError` otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise UploadError("the file is empty")
    if len(data) > limits.max_bytes:
        raise UploadError(
            f"the file is {len(data) / 2**20:.1f} MiB; the limit is {limits.max_bytes / 2**20:.0f} MiB"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                width, height = image.size
                if width * height > limits.max_pixels:
                    raise UploadError(
                        f"the image is {width} × {height} pixels; the limit is "
                        f"{limits.max_pixels:,} pixels (a decompression bomb?)"
                    )
                image.load()
                converted = image.convert("L" if channels == 1 else "RGB")
        except UploadError:
            raise
        except UnidentifiedImageError:
            raise UploadError(
                f"not an image: its content is none of {', '.join(FORMATS)}"
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadError(
                f"the image declares too many pixels; the limit is {limits.max_pixels:,}"
            ) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise UploadError(
                f"the image is corrupt or truncated and cannot be decoded ({exc})"
            ) from None
    import torchvision.transforms.v2.functional as TF

    return TF.pil_to_tensor(converted)
