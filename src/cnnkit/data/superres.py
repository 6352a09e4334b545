"""Super-resolution data: the colour convention, the low-resolution maker and ``--data photos:DIR``.

**Colour.** Super-resolution networks and their PSNR/SSIM work on the luminance Y of ITU-R BT.601
YCbCr in its "studio" range, as the SR papers compute it with MATLAB's ``rgb2ycbcr``: for R, G, B
in [0, 1], ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` (so Y is in [16, 235] / 255), Cb
and Cr in [16, 240] / 255 (:func:`rgb_to_ycbcr`; equal to ``skimage.color.rgb2ycbcr`` / 255, a test
checks). Y is kept as a float, never rounded to 8 bits.

**Low-resolution images** are made exactly as PIL's ``Image.resize((w // s, h // s), Image.BICUBIC)``
makes them, by PIL itself (:func:`low_resolution`): the antialiased bicubic of MATLAB's ``imresize``
that SR papers use, on the 8-bit RGB image, after cropping the image's bottom and right to a
multiple of the scale (:func:`modcrop`, as the papers' ``modcrop``) so that every low-resolution
pixel covers exactly ``s × s`` high-resolution ones.

**``--data photos:DIR``** (:func:`photo_data`): every image file under DIR (decoded by
``cnnkit.data.images.read_image``, RGB), split into train / valid / test images (seeded), each
photo and its low-resolution version kept as uint8 RGB. Training batches are random patches: a
``patch_size`` high-resolution patch (default 96 px) and its aligned low-resolution patch, from a
photo drawn uniformly (each photo equally often, whatever its size: drawn by area, one large
smooth photo, a retina scan or a night sky, would fill most batches with flat patches), at a
uniform position, flipped and rotated by one of the 8 symmetries of the square (``dihedral``); patch ``i`` of the virtual set is a function of
``(seed, i)`` alone and each epoch's sampler draws ``patches`` indices from the loader's seeded
generator, so a run repeats exactly whatever ``--workers`` is. Validation and test batches are whole
photos (one per batch), centre-cropped to at most ``eval_crop`` pixels a side. An item is
``(lr_y, {"hr": hr_y, "lr": lr_y})``: float Y (1, h, w) and (1, s·h, s·w) (the task's metrics need the
low-resolution image for their bicubic baseline).

Options (``--data-option``): ``scale`` (set from the model's ``--model-option scale``), ``patch_size``,
``patches`` (per epoch), ``fractions`` (train, valid, test; default 0.75, 0.15, 0.10), ``dihedral``,
``eval_crop``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnkit.data.datasets import SPLITS, Augment, DataMeta, ImageData

#: ``DataMeta.source["format"]`` of ``--data photos:DIR``, so that ``load_data_from_meta`` reloads it
FORMAT = "photos"
PREFIX = "photos:"
#: ``--data-option`` names and defaults (``scale`` comes from the model)
DEFAULTS: dict[str, Any] = {
    "scale": 2,
    "patch_size": 96,
    "patches": 1000,
    "fractions": (0.75, 0.15, 0.10),
    "dihedral": True,
    "eval_crop": 512,
}
#: the size of the virtual set of training patches that each epoch's sampler draws from
VIRTUAL_PATCHES = 2**31 - 1

# ITU-R BT.601 for R, G, B in [0, 1] → Y, Cb, Cr in [0, 255] (MATLAB rgb2ycbcr's definition).
# Written out because torchvision has no YCbCr conversion; skimage.color.rgb2ycbcr (a dev-only
# dependency) is the test's reference.
_YCBCR_MATRIX = torch.tensor(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=torch.float64,
)
_YCBCR_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64)


def _as_float_rgb(image: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] images (..., 1 or 3, H, W) → float [0, 1] RGB."""
    if image.shape[-3] == 1:
        image = image.expand(*image.shape[:-3], 3, *image.shape[-2:])
    if image.shape[-3] != 3:
        raise ValueError(
            f"expected an RGB (3-channel) or grey (1-channel) image (..., C, H, W), got shape "
            f"{tuple(image.shape)}"
        )
    return image.float() / 255 if image.dtype == torch.uint8 else image.float()


def rgb_to_ycbcr(image: torch.Tensor) -> torch.Tensor:
    """RGB (uint8, or float in [0, 1]) (..., 3, H, W) → float YCbCr (..., 3, H, W) on the [0, 1]
    scale: ITU-R BT.601 studio range, Y in [16, 235] / 255 (MATLAB's ``rgb2ycbcr`` / 255)."""
    rgb = _as_float_rgb(image)
    matrix = (_YCBCR_MATRIX / 255).to(rgb)
    offset = (_YCBCR_OFFSET / 255).to(rgb)
    return torch.einsum("ij,...jhw->...ihw", matrix, rgb) + offset[:, None, None]


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rgb_to_ycbcr`: float (..., 3, H, W) → float RGB in [0, 1] (not
    clamped: an upscaled Y may step outside)."""
    inverse = torch.linalg.inv(_YCBCR_MATRIX / 255).to(ycbcr.dtype)
    offset = (_YCBCR_OFFSET / 255).to(ycbcr.dtype)
    return torch.einsum("ij,...jhw->...ihw", inverse, ycbcr - offset[:, None, None])


def y_channel(image: torch.Tensor) -> torch.Tensor:
    """Luminance Y (..., 1, H, W) of an RGB or grey image, as in :func:`rgb_to_ycbcr`."""
    return rgb_to_ycbcr(image)[..., :1, :, :]


def modcrop(image: torch.Tensor, scale: int) -> torch.Tensor:
    """``image`` (..., H, W) cropped at the bottom and right to a multiple of ``scale``."""
    height, width = image.shape[-2:]
    return image[..., : height - height % scale, : width - width % scale]


def low_resolution(image: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hr, lr)``: the uint8 image (C, H, W) cropped to a multiple of ``scale`` (:func:`modcrop`),
    and its downscaling by ``scale`` exactly as PIL's ``Image.resize((W // s, H // s),
    Image.BICUBIC)`` computes it (PIL does it: antialiased bicubic, 8-bit output)."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"low_resolution: expected a uint8 image (1 or 3, H, W), got {image.dtype} "
            f"{tuple(image.shape)}"
        )
    if scale < 1 or min(image.shape[1:]) < scale:
        raise ValueError(
            f"low_resolution: scale {scale} on a {image.shape[2]}x{image.shape[1]} image; expected "
            "an integer scale >= 1 no larger than the image"
        )
    hr = modcrop(image, scale)
    height, width = hr.shape[1:]
    pixels = hr.permute(1, 2, 0).numpy()
    pil = Image.fromarray(pixels[..., 0] if hr.shape[0] == 1 else pixels)
    small = np.asarray(pil.resize((width // scale, height // scale), Image.Resampling.BICUBIC))
    lr = torch.from_numpy(small.copy())
    lr = lr[None] if lr.dim() == 2 else lr.permute(2, 0, 1).contiguous()
    return hr.contiguous(), lr


# ---- datasets ---------------------------------------------------------------------------------


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetry ``k`` (0-7) of the square: ``k % 4`` quarter turns, mirrored when ``k >= 4``."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


class PatchDataset(Dataset):
    """A virtual set of :data:`VIRTUAL_PATCHES` training patches: item ``i`` is the patch that
    ``numpy.random.default_rng((seed, i))`` places, a function of ``(seed, i)`` alone.

    ``lr``/``hr``: the photos' uint8 RGB pairs; ``lr_patch``: the low-resolution patch side."""

    def __init__(
        self,
        lr: Sequence[torch.Tensor],
        hr: Sequence[torch.Tensor],
        scale: int,
        lr_patch: int,
        seed: int = 0,
        dihedral: bool = True,
    ) -> None:
        self.lr, self.hr, self.scale, self.lr_patch = list(lr), list(hr), scale, lr_patch
        self.seed, self.dihedral = seed, dihedral
        if not self.lr or min(min(image.shape[1:]) for image in self.lr) < lr_patch:
            raise ValueError(f"PatchDataset: every photo must hold a {lr_patch}-pixel LR patch")

    def __len__(self) -> int:
        return VIRTUAL_PATCHES

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rng = np.random.default_rng((self.seed, index))
        photo = int(rng.integers(len(self.lr)))  # each photo equally often, then a position
        lr, hr, p, s = self.lr[photo], self.hr[photo], self.lr_patch, self.scale
        top = int(rng.integers(lr.shape[1] - p + 1))
        left = int(rng.integers(lr.shape[2] - p + 1))
        lr_y = y_channel(lr[:, top : top + p, left : left + p])
        hr_y = y_channel(hr[:, s * top : s * (top + p), s * left : s * (left + p)])
        if self.dihedral:
            k = int(rng.integers(8))
            lr_y, hr_y = _dihedral(lr_y, k).contiguous(), _dihedral(hr_y, k).contiguous()
        return lr_y, {"hr": hr_y, "lr": lr_y}


class RandomPatches(Sampler[int]):
    """``count`` indices of the virtual patch set, drawn from ``generator`` (the loader's, which the
    ``Trainer`` reseeds every epoch). Not a ``RandomSampler``: sharding one under torchrun would
    permute all :data:`VIRTUAL_PATCHES` indices, so ``photos:DIR`` trains in one process (under
    torchrun the trainer refuses this sampler with a clear error)."""

    def __init__(self, count: int, generator: torch.Generator) -> None:
        self.count, self.generator = count, generator

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        # in draws of 32, as RandomSampler(replacement=True) makes them (the shipped weights were
        # trained with one), so the same seed gives the same patches
        for start in range(0, self.count, 32):
            size = min(32, self.count - start)
            yield from torch.randint(VIRTUAL_PATCHES, (size,), generator=self.generator).tolist()


class WholePhotos(Dataset):
    """Whole photos as items ``(lr_y, {"hr": hr_y, "lr": lr_y})`` (served one per batch)."""

    def __init__(self, lr: Sequence[torch.Tensor], hr: Sequence[torch.Tensor]) -> None:
        self.lr, self.hr = list(lr), list(hr)

    def __len__(self) -> int:
        return len(self.lr)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        lr_y = y_channel(self.lr[index])
        return lr_y, {"hr": y_channel(self.hr[index]), "lr": lr_y}


@dataclass(frozen=True)
class PhotoPatches(ImageData):
    """``--data photos:DIR``: each split is ``(low-resolution photos, photos)`` as uint8 RGB lists;
    :meth:`batches` serves random patches (``shuffle=True``) or whole photos (see the module)."""

    scale: int = 2
    patch_size: int = 96
    patches: int = 1000
    dihedral: bool = True

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        device: torch.device | str = "cpu",
        memory_format: torch.memory_format = torch.contiguous_format,
        workers: int = 2,
        collate: Callable | None = None,
    ) -> DataLoader:
        """Random patches of ``split`` when ``shuffle`` (training), else its whole photos one per
        batch (photos differ in size). ``augment`` is not used: patches get ``dihedral``."""
        images, targets = self._split(split)
        lr, hr = list(images), list(targets)
        if not shuffle:
            return DataLoader(WholePhotos(lr, hr), batch_size=1, collate_fn=collate)
        dataset = PatchDataset(
            lr, hr, self.scale, self.patch_size // self.scale, seed, self.dihedral
        )
        generator = torch.Generator().manual_seed(seed)  # the Trainer reseeds it every epoch
        sampler = RandomPatches(self.patches, generator)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            prefetch_factor=2 if workers > 0 else None,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
            generator=generator,
            collate_fn=collate,
        )


def find_photos(root: Path) -> list[Path]:
    """Image files under ``root`` (any depth), sorted."""
    from cnnkit.data.folder import IMAGE_EXTENSIONS

    if not root.is_dir():
        raise ValueError(
            f"--data {PREFIX}{root}: {'not a folder' if root.exists() else 'does not exist'}; "
            "expected a folder of images"
        )
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _centre_crop(
    lr: torch.Tensor, hr: torch.Tensor, scale: int, size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The centre of an aligned pair, at most ``size`` high-resolution pixels a side."""
    if size is None:
        return lr, hr
    side = max(1, size // scale)
    height, width = lr.shape[1:]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    lr = lr[:, top : top + side, left : left + side]
    hr = hr[:, scale * top : scale * (top + side), scale * left : scale * (left + side)]
    return lr.contiguous(), hr.contiguous()


def _options(options: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"--data-option {unknown[0]!r}: {PREFIX}DIR takes {', '.join(sorted(DEFAULTS))}"
        )
    merged = {**DEFAULTS, **options}
    scale, patch = int(merged["scale"]), int(merged["patch_size"])
    if scale < 1 or patch < scale or patch % scale or int(merged["patches"]) < 1:
        raise ValueError(
            f"--data-option: scale={scale}, patch_size={patch}, patches={merged['patches']}; "
            "expected patch_size a multiple of the scale and at least one patch per epoch"
        )
    fractions = tuple(float(f) for f in merged["fractions"])
    if len(fractions) != 3 or min(fractions) < 0 or not 0.99 <= sum(fractions) <= 1.01:
        raise ValueError(
            f"--data-option fractions={list(merged['fractions'])}: expected three fractions "
            "(train, valid, test) >= 0 adding up to 1"
        )
    crop = merged["eval_crop"]
    return {
        "scale": scale,
        "patch_size": patch,
        "patches": int(merged["patches"]),
        "fractions": fractions,
        "dihedral": bool(merged["dihedral"]),
        "eval_crop": None if crop is None else int(crop),
    }


def photo_data(
    root: str | os.PathLike,
    *,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    task: str = "superres",
) -> PhotoPatches:
    """``--data photos:DIR`` for the ``superres`` task (see the module's docstring). A photo that
    cannot be decoded, or is smaller than a training patch, is an error naming the file."""
    from cnnkit.data.images import read_image
    from cnnkit.data.segmentation import split_indices

    if task != "superres":
        raise ValueError(
            f"--data {PREFIX}DIR: photos without labels train the superres task, not {task}"
        )
    opts = _options(options)
    scale, patch = opts["scale"], opts["patch_size"]
    root = Path(root)
    files = find_photos(root)
    indices = dict(zip(SPLITS, split_indices(len(files), opts["fractions"], seed), strict=True))
    pairs = []
    for index, path in enumerate(files):
        image = read_image(path, "RGB")
        if index in indices["train"] and min(image.shape[1:]) < patch:
            raise ValueError(
                f"{path}: the image is {image.shape[2]}x{image.shape[1]}, smaller than a training "
                f"patch ({patch}x{patch}); pass --data-option patch_size=N with N at most "
                f"{min(image.shape[1:]) - min(image.shape[1:]) % scale}, or remove the image"
            )
        if min(image.shape[1:]) < scale:
            raise ValueError(f"{path}: the image is smaller than the scale {scale}")
        hr, lr = low_resolution(image, scale)
        pairs.append((lr, hr))
    splits: dict[str, tuple[Any, Any] | None] = {}
    for name, members in indices.items():
        chosen = [pairs[i] for i in members]
        if name != "train":
            chosen = [_centre_crop(lr, hr, scale, opts["eval_crop"]) for lr, hr in chosen]
        splits[name] = ([lr for lr, _ in chosen], [hr for _, hr in chosen]) if chosen else None
    source = {
        "format": FORMAT,
        "root": str(root.resolve()),
        "task": "superres",
        "options": {**opts, "fractions": list(opts["fractions"])},
        "seed": seed,
        "files": {
            name: [str(files[i].relative_to(root)) for i in index]
            for name, index in indices.items()
        },
    }
    meta = DataMeta(
        f"{PREFIX}{root}",
        (1, patch // scale, patch // scale),  # the model sees low-resolution Y patches
        (),
        (0.0,),
        (1.0,),
        source=source,
    )
    return PhotoPatches(
        meta, splits, scale=scale, patch_size=patch, patches=opts["patches"],
        dihedral=opts["dihedral"],
    )  # fmt: skip


def photo_data_from_meta(meta: DataMeta) -> PhotoPatches:
    """The splits a ``superres`` run was trained on, from its recorded :class:`DataMeta`."""
    source = meta.source
    return photo_data(
        source["root"], options=source.get("options"), seed=int(source.get("seed", 0))
    )
