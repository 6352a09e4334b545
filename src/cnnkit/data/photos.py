"""Real photos that scikit-learn and scikit-image install, for super-resolution without a
download: ``write_sample_photos(DIR)`` (``cnnkit data photos --out DIR``) writes them as PNGs, a
folder for ``cnnkit train --task superres --data photos:DIR``.

The photos: scikit-learn's ``load_sample_images`` (``china``, ``flower``: JPEGs, 640×427) and
scikit-image's ``skimage.data`` colour photos (``astronaut``, ``chelsea``, ``coffee``, ``rocket``,
``motorcycle_left`` and ``motorcycle_right`` (a stereo pair), ``immunohistochemistry``,
``hubble_deep_field``, ``retina``) and grey photos (``camera``, ``moon``, ``coins``, and the textures
``brick``, ``grass``, ``gravel``), given as RGB with R = G = B: the super-resolution models see only
the luminance Y, which a grey photo has as fully as a colour one. Left out: drawings, text scans,
synthetic images, microscopy and a motion-blurred photo (``clock``).
:data:`HELD_OUT` (``astronaut``, ``china``; one from each library, chosen before any training) are
never trained on: they are the README's test photos, written only with ``held_out=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: the photos the README's super-resolution table measures on; no shipped weights saw them
HELD_OUT = ("astronaut", "china")


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(f"{name}.jpg"))

    return load


def _skimage(name: str, index: int | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        try:
            import skimage.data
        except ImportError:
            raise ImportError(
                f"photo {name!r} comes from scikit-image: pip install scikit-image"
            ) from None
        image = getattr(skimage.data, name)()
        return np.asarray(image if index is None else image[index])

    return load


def _skimage_grey(name: str) -> Callable[[], np.ndarray]:
    load_grey = _skimage(name)

    def load() -> np.ndarray:
        return np.repeat(load_grey()[:, :, None], 3, axis=2)  # H x W x 3, R = G = B

    return load


#: name → loader of an (H, W, 3) uint8 array
SAMPLE_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "china": _sklearn("china"),
    "flower": _sklearn("flower"),
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle_left": _skimage("stereo_motorcycle", 0),
    "motorcycle_right": _skimage("stereo_motorcycle", 1),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "retina": _skimage("retina"),
    **{
        name: _skimage_grey(name)
        for name in ("camera", "moon", "coins", "brick", "grass", "gravel")
    },
}


def sample_photo(name: str) -> np.ndarray:
    """The photo ``name`` as an (H, W, 3) uint8 array."""
    if name not in SAMPLE_PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of: {', '.join(SAMPLE_PHOTOS)}")
    image = np.array(SAMPLE_PHOTOS[name](), copy=True)  # writable, so torch.from_numpy can share it
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"photo {name!r}: expected (H, W, 3) uint8, got {image.dtype} {image.shape}"
        )
    return image


def training_photos() -> list[str]:
    """The photos the shipped weights are trained on: every one but :data:`HELD_OUT`."""
    return [name for name in SAMPLE_PHOTOS if name not in HELD_OUT]


def write_sample_photos(
    out: str | os.PathLike, names: list[str] | None = None, *, held_out: bool = False
) -> list[Path]:
    """Write ``names`` (default: the training photos, or with ``held_out`` the held-out ones) as
    ``out/NAME.png`` (atomically; the folder is created) and return the paths."""
    from PIL import Image

    from cnnkit.io import atomic_write

    chosen = names if names is not None else (list(HELD_OUT) if held_out else training_photos())
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in chosen:
        picture = Image.fromarray(sample_photo(name))

        def write(tmp: Path, picture: Image.Image = picture) -> None:
            picture.save(tmp, format="PNG")

        paths.append(atomic_write(folder / f"{name}.png", write))
    return paths
