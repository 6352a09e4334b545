"""Segmentation datasets from files, decoded once: a folder of images and label PNGs, or annotation
files whose objects have outlines (COCO polygons or RLE, VIA polygons, LabelMe polygons or masks).

**A folder** (the names pair images with masks; ``NAME`` is any file stem)::

    ROOT/images/NAME.png|jpg|...   the images (any colour mode; read as RGB, or grey with channels=1)
    ROOT/masks/NAME.png            one label map per image, the image's size
    ROOT/classes.txt | classes.json  optional: the class names (index 0 first)

A mask is either

- an **index** PNG (mode ``L``, ``I``, ``I;16`` or ``1``): each pixel holds its class index, or
- a **colour** PNG, VOC-style (mode ``P``, or ``RGB``): each pixel's colour (its palette entry for
  ``P``) names the class. The colours are the classes' colours from ``classes.json``, by default the
  PASCAL VOC colour map (:func:`voc_colormap`: class 1 is (128, 0, 0), class 15 "person" is
  (192, 128, 128)), so VOC's ``SegmentationClass`` PNGs read as their class indices.

In both, 255 (VOC's border colour (224, 224, 192) in colour masks) marks pixels to ignore
(``cnnkit.losses.VOC_IGNORE_INDEX``). ``classes.txt`` has one name per line; ``classes.json`` is a
list of names, or of ``{"name": ..., "color": [r, g, b]}``. Without either, the classes are
numbered ``0 … K-1`` with ``K`` one more than the largest label found.

Bad input is an error naming the file: a mask of another size than its image, a label outside the
classes, a colour that is no class's, an image without a mask.

**Annotation files** (a COCO ``annotations.json``, a VIA project, a LabelMe folder, or the dataset
folder holding one; read by ``cnnkit.data.annotations.read_annotations``, which rasterizes polygons
and RLE with pycocotools): each image's objects become one label map (:func:`semantic_map`):

- background is 0 and object class k (an index into the file's classes) is k + 1: the convention
  of :data:`OBJECT_OFFSET` and :func:`semantic_class_names` (class names ``("background",
  *classes)``), which ``cnnkit.data.scenes`` paints its semantic masks with too, so the scenes that
  ``cnnkit data make-scenes --format coco`` writes come back as the generator's semantic masks;
- where objects overlap, the **smaller is on top**: objects are painted largest first (area = the
  pixels of the object's mask; equal areas in the file's order, the later on top), so a small
  object in front of a large one is not painted over;
- COCO ``iscrowd`` regions are 255, ignored (a crowd's outline says where people are, not which
  pixel is whose: VOC's "void", and COCO's evaluation ignores what matches a crowd), painted under
  the other objects, so an object annotated on its own inside a crowd keeps its pixels;
- an image without objects is all background.

Errors name the annotation file, the record (the image) and the field: an object with a box but no
outline (``segmentation`` in COCO; VOC and YOLO hold boxes only and are refused as a whole), an
image whose pixels are not the size its record (and so its masks) says, an image that cannot be
decoded; and, from ``read_annotations``, an unknown category, a polygon outside the image, a
malformed RLE. With ``skip_invalid`` the bad record (an object, or an image) is left out and its
message kept in ``SegmentationFiles.warnings`` (``cnnkit train --skip-invalid`` prints them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import InterpolationMode

from cnnkit.data.folder import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from cnnkit.data.datasets import ImageData

IGNORE_INDEX = 255  # cnnkit.losses.VOC_IGNORE_INDEX (data sits above metrics/losses; a test checks)
IMAGES, MASKS = "images", "masks"
#: ``DataMeta.source["format"]`` of a segmentation folder and of annotation files read as
#: segmentation data, so ``load_data_from_meta`` reloads them
FORMAT, ANNOTATIONS_FORMAT = "segmentation-folder", "segmentation-annotations"
INDEX_MODES = ("L", "I", "I;16", "1")
COLOUR_MODES = ("P", "RGB")
#: Label maps made from objects (the scenes', annotation files'): 0 is the background, object class
#: k is k + OBJECT_OFFSET, and the class names are ``semantic_class_names(classes)``.
BACKGROUND, OBJECT_OFFSET = "background", 1


def semantic_class_names(classes: Sequence[str]) -> tuple[str, ...]:
    """The class names of label maps made from objects of ``classes``: the background first."""
    return (BACKGROUND, *classes)


def voc_colormap(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map, (n, 3) uint8: colour k spreads the bits of k over the high bits
    of R, G, B (``VOCdevkit/VOCcode/VOClabelcolormap.m``). Class 0 is black, 255 (ignore) is
    (224, 224, 192). Written out because no installed library exports it."""
    colors = np.zeros((n, 3), dtype=np.uint8)
    for k in range(n):
        code, rgb = k, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
        colors[k] = rgb
    return colors


def rgb(values: Sequence[int] | np.ndarray) -> tuple[int, int, int]:
    """Three colour values as an ``(r, g, b)`` tuple of ints."""
    red, green, blue = (int(v) for v in values)
    return red, green, blue


@dataclass(frozen=True)
class ClassTable:
    """Class names and the colour of each class in colour masks."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]


def read_classes(root: Path) -> ClassTable | None:
    """``classes.json`` or ``classes.txt`` in ``root``; ``None`` when there is neither."""
    voc = voc_colormap()
    json_path, txt_path = root / "classes.json", root / "classes.txt"
    if json_path.is_file():
        try:
            spec = json.loads(json_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{json_path}: not valid JSON ({exc})") from None
        if not isinstance(spec, list) or not spec:
            raise ValueError(f"{json_path}: expected a non-empty list of class names, got {spec!r}")
        names: list[str] = []
        colors: list[tuple[int, int, int]] = []
        for k, item in enumerate(spec):
            if isinstance(item, str):
                names.append(item)
                colors.append(rgb(voc[k]))
                continue
            color = item.get("color") if isinstance(item, dict) else None
            if not (
                isinstance(item, dict)
                and isinstance(item.get("name"), str)
                and (color is None or (isinstance(color, list) and len(color) == 3))
            ):
                raise ValueError(
                    f"{json_path}: item {k} is {item!r}; expected a name or "
                    '{"name": ..., "color": [r, g, b]}'
                )
            names.append(item["name"])
            colors.append(rgb(color or voc[k]))
        return ClassTable(tuple(names), tuple(colors))
    if txt_path.is_file():
        names = [line.strip() for line in txt_path.read_text().splitlines() if line.strip()]
        if not names:
            raise ValueError(f"{txt_path}: no class names (expected one per line)")
        return ClassTable(tuple(names), tuple(rgb(voc[k]) for k in range(len(names))))
    return None


def find_pairs(root: str | os.PathLike) -> list[tuple[Path, Path]]:
    """``(image, mask)`` paths of ``root/images`` and ``root/masks``, sorted by name."""
    root = Path(root)
    image_dir, mask_dir = root / IMAGES, root / MASKS
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise ValueError(
                f"{root}: no folder {folder.name}/; a segmentation dataset has images/NAME.png|jpg "
                "and masks/NAME.png"
            )
    images = sorted(
        p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not images:
        raise ValueError(f"{image_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    pairs = []
    for image in images:
        mask = mask_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise ValueError(f"{image}: no mask {mask}")
        pairs.append((image, mask))
    return pairs


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def read_mask(
    path: str | os.PathLike, classes: ClassTable | None, size: tuple[int, int] | None = None
) -> np.ndarray:
    """A mask PNG → uint8 (H, W) class indices (255: ignore). ``size`` (H, W): the image's size,
    which the mask must have. Labels are checked against ``classes`` when it is given."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode in INDEX_MODES:
                labels = np.asarray(image, dtype=np.int64)
            elif mode == "P":
                indices = np.asarray(image)
                palette = np.asarray(image.getpalette() or [], dtype=np.uint8)
                palette = np.pad(palette, (0, 768 - len(palette))).reshape(256, 3)
                labels = _colour_labels(path, palette[indices], classes)
            elif mode == "RGB":
                labels = _colour_labels(path, np.asarray(image), classes)
            else:
                raise ValueError(
                    f"{path}: a mask in colour mode {mode}; expected class indices "
                    f"({', '.join(INDEX_MODES)}) or colours (a palette PNG, or RGB)"
                )
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"{path}: not a readable PNG mask ({exc})") from None
    if size is not None and labels.shape != tuple(size):
        raise ValueError(
            f"{path}: mask is {labels.shape[1]}x{labels.shape[0]} (WxH); expected its image's "
            f"size {size[1]}x{size[0]}"
        )
    limit = len(classes.names) if classes is not None else IGNORE_INDEX
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= limit))
    if bad.any():
        found = np.unique(labels[bad])
        y, x = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: label {int(found[0])} at pixel (x={x}, y={y}) (labels found outside the "
            f"classes: {found[:10].tolist()}); expected 0 to {limit - 1}, or {IGNORE_INDEX} (ignore)"
        )
    return labels.astype(np.uint8)


def _colour_labels(path: Path, rgb: np.ndarray, classes: ClassTable | None) -> np.ndarray:
    """Colours (H, W, 3) → class indices by the class table (the VOC colour map by default)."""
    if classes is not None:
        table = {
            _colour_codes(np.asarray(c, dtype=np.uint8)).item(): k
            for k, c in enumerate(classes.colors)
        }
    else:
        voc = _colour_codes(voc_colormap()[:IGNORE_INDEX])
        table = {int(code): k for k, code in enumerate(voc)}
    table.setdefault(int(_colour_codes(voc_colormap()[IGNORE_INDEX])), IGNORE_INDEX)
    codes = _colour_codes(rgb)
    found, inverse = np.unique(codes, return_inverse=True)
    lookup = np.array([table.get(int(code), -1) for code in found], dtype=np.int64)
    unknown = found[lookup < 0]
    if len(unknown):
        code = int(unknown[0])
        y, x = np.argwhere(codes == code)[0]
        colour = (code >> 16, (code >> 8) & 255, code & 255)
        raise ValueError(
            f"{path}: colour {colour} at pixel (x={x}, y={y}) is no class's "
            f"({len(unknown)} unknown colours); expected the classes' colours "
            f"({'classes.json' if classes is not None else 'the PASCAL VOC colour map'}) "
            f"or {tuple(int(c) for c in voc_colormap()[IGNORE_INDEX])} (ignore)"
        )
    return lookup[inverse].reshape(codes.shape)


def read_image(path: Path, channels: int) -> torch.Tensor:
    """An image file → uint8 (C, H, W), C = 1 (grey) or 3 (RGB)."""
    try:
        with Image.open(path) as image:
            pixels = TF.pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None
    return pixels


@dataclass(frozen=True)
class SegmentationFiles:
    """Decoded segmentation data: uint8 images (N, C, H, W), label maps uint8 (N, H, W).

    ``format``: :data:`FORMAT` (a folder) or :data:`ANNOTATIONS_FORMAT`, with the annotation
    format in ``annotation_format``; ``warnings``: the records ``skip_invalid`` left out."""

    images: torch.Tensor
    masks: torch.Tensor
    names: tuple[str, ...]
    class_names: tuple[str, ...]
    format: str = FORMAT
    annotation_format: str | None = None
    warnings: tuple[str, ...] = ()


def _at_one_size(
    root: Path,
    paths: Sequence[Path],
    images: list[torch.Tensor],
    masks: list[torch.Tensor],
    image_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and label maps stacked. All at one size are kept as they are; with ``image_size``
    (needed when sizes differ) each is stretched to ``image_size`` square: images bilinear with
    antialiasing, label maps by nearest neighbour (half-pixel centres, so labels stay labels and
    line up with their images)."""
    sizes = {tuple(i.shape[1:]) for i in images}
    if image_size is not None:
        target = [image_size, image_size]
        images = [
            i if list(i.shape[1:]) == target else TF.resize(i, target, antialias=True)
            for i in images
        ]
        masks = [
            m
            if list(m.shape) == target
            else TF.resize(m[None], target, InterpolationMode.NEAREST_EXACT)[0]
            for m in masks
        ]
    elif len(sizes) > 1:
        (a, b) = sorted(sizes)[:2]
        first = next(p for p, i in zip(paths, images, strict=True) if tuple(i.shape[1:]) == a)
        other = next(p for p, i in zip(paths, images, strict=True) if tuple(i.shape[1:]) == b)
        raise ValueError(
            f"{root}: images differ in size ({first} is {a[1]}x{a[0]}, {other} is {b[1]}x{b[0]}); "
            "pass --image-size to resize them all to one square size"
        )
    return torch.stack(images), torch.stack(masks)


def load_segmentation_folder(
    root: str | os.PathLike, channels: int = 3, image_size: int | None = None
) -> SegmentationFiles:
    """Decode every image and mask of the folder ``root`` once (sizes: :func:`_at_one_size`)."""
    root = Path(root)
    classes = read_classes(root)
    images, masks = [], []
    pairs = find_pairs(root)
    for image_path, mask_path in pairs:
        image = read_image(image_path, channels)
        size = (image.shape[1], image.shape[2])
        mask = torch.from_numpy(read_mask(mask_path, classes, size))
        images.append(image)
        masks.append(mask)
    stacked_images, stacked = _at_one_size(root, [p for p, _ in pairs], images, masks, image_size)
    if classes is None:
        labels = stacked[stacked != IGNORE_INDEX]
        count = int(labels.max()) + 1 if labels.numel() else 1
        names: tuple[str, ...] = tuple(str(k) for k in range(count))
    else:
        names = classes.names
    return SegmentationFiles(stacked_images, stacked, tuple(p.stem for p, _ in pairs), names)


# ---- label maps from objects (annotation files) ---------------------------------------------------


def semantic_map(
    masks: torch.Tensor, labels: torch.Tensor, iscrowd: torch.Tensor | None = None
) -> torch.Tensor:
    """One image's objects → its label map, uint8 (H, W): 0 background, class k → k +
    :data:`OBJECT_OFFSET`, crowd regions :data:`IGNORE_INDEX`.

    ``masks`` bool (M, H, W), ``labels`` class indices (M,), ``iscrowd`` bool (M,) (None: no
    crowd). Painting order, each over the ones before: the crowd regions, then the other objects
    by decreasing area (their mask's pixels; equal areas in the given order), so the smaller of two
    overlapping objects is on top and an object inside a crowd keeps its pixels."""
    count, height, width = masks.shape
    masks = masks.bool()
    crowd = torch.zeros(count, dtype=torch.bool) if iscrowd is None else iscrowd.bool()
    others = torch.nonzero(~crowd).flatten()
    area = masks.flatten(1).sum(1)
    others = others[torch.argsort(area[others], descending=True, stable=True)]
    order = torch.cat([torch.nonzero(crowd).flatten(), others])
    values = torch.where(crowd, IGNORE_INDEX, labels.long() + OBJECT_OFFSET)[order]
    # Each pixel takes the last painted object covering it: the highest painting rank among them
    # (0: none), in one reduction over the objects instead of a Python loop painting them.
    rank = torch.arange(1, count + 1, dtype=torch.int32).view(-1, 1, 1)
    top = torch.where(masks[order], rank, 0).amax(0) if count else torch.zeros(height, width)
    lookup = torch.cat([torch.zeros(1, dtype=torch.long), values]).to(torch.uint8)
    return lookup[top.long()]


#: per annotation format that holds outlines, the fields errors name: the object's outline, the
#: image file, the image size
ANNOTATION_FIELDS = {
    "coco": {"outline": "segmentation", "image": "file_name", "size": "width/height"},
    "via": {"outline": "shape_attributes.name", "image": "filename", "size": "filename"},
    "labelme": {"outline": "shape_type", "image": "imagePath", "size": "imageWidth/imageHeight"},
}


def load_annotation_segmentation(
    path: str | os.PathLike,
    channels: int = 3,
    image_size: int | None = None,
    skip_invalid: bool = False,
    format: str | None = None,
) -> SegmentationFiles:
    """The label maps of an annotated dataset (see the module docstring) and its images, decoded
    once (``cnnkit.data.images.read_image``: upright, 8 bits) and sized by :func:`_at_one_size`.
    ``format``: the annotation format, detected when None."""
    from cnnkit.data.annotations import (
        COCO_FILE,
        VIA_FILE,
        AnnotationError,
        detect_format,
        read_annotations,
    )
    from cnnkit.data.images import ImageDecodeError, mode_for_channels
    from cnnkit.data.images import read_image as decode

    path = Path(path)
    fmt = format or detect_format(path)
    if fmt not in ANNOTATION_FIELDS:
        raise ValueError(
            f"{path}: {fmt} annotations hold boxes only; a label map needs each object's "
            "outline: COCO polygons or RLE, VIA polygons, LabelMe polygons or masks"
        )
    fields = ANNOTATION_FIELDS[fmt]
    own_file = {"coco": COCO_FILE, "via": VIA_FILE}.get(fmt)
    file = path / own_file if own_file and path.is_dir() else path  # the file errors name
    annotations = read_annotations(path, fmt, skip_invalid=skip_invalid)
    class_names = semantic_class_names(annotations.classes)
    if len(class_names) > IGNORE_INDEX:
        raise ValueError(
            f"{file}: {len(annotations.classes)} classes; a label map holds the background and at "
            f"most {IGNORE_INDEX - 1} classes ({IGNORE_INDEX} marks pixels to ignore)"
        )
    warnings = list(annotations.warnings)
    paths: list[Path] = []
    images: list[torch.Tensor] = []
    maps: list[torch.Tensor] = []
    for index, record in enumerate(annotations.images):
        where = f"image {record.file_name}" + (
            f" (id {record.image_id})" if record.image_id is not None else ""
        )
        image_path = annotations.image_path(index)
        try:
            if len(record) and record.masks is None:
                raise AnnotationError(
                    file, where, fields["outline"],
                    "an object has a box but no outline (polygon, RLE or mask); a label map "
                    "needs every object's pixels",
                )  # fmt: skip
            try:
                image = decode(image_path, mode_for_channels(channels))
            except ImageDecodeError as exc:
                raise AnnotationError(file, where, fields["image"], str(exc)) from None
            if tuple(image.shape[1:]) != (record.height, record.width):
                raise AnnotationError(
                    file, where, fields["size"],
                    f"the image {image_path} is {image.shape[2]}x{image.shape[1]} (WxH); the "
                    f"annotations, and so the masks, are {record.width}x{record.height}",
                )  # fmt: skip
        except AnnotationError as error:
            if not skip_invalid:
                raise
            warnings.append(str(error))
            continue
        masks = record.masks
        if masks is None:  # an image without objects: all background
            masks = torch.zeros(0, record.height, record.width, dtype=torch.bool)
        paths.append(image_path)
        images.append(image)
        maps.append(semantic_map(masks, record.labels, record.iscrowd))
    if not images:
        raise ValueError(
            f"{file}: no image to train on ({len(annotations.images)} listed, "
            f"{len(warnings)} invalid records skipped)"
        )
    stacked_images, stacked_maps = _at_one_size(file, paths, images, maps, image_size)
    return SegmentationFiles(
        stacked_images,
        stacked_maps,
        tuple(p.stem for p in paths),
        class_names,
        ANNOTATIONS_FORMAT,
        fmt,
        tuple(warnings),
    )


def load_segmentation_files(
    root: str | os.PathLike,
    channels: int = 3,
    image_size: int | None = None,
    skip_invalid: bool = False,
) -> SegmentationFiles:
    """A folder of ``images/`` and ``masks/`` (:func:`load_segmentation_folder`; a folder with
    ``masks/`` is one, whatever else it holds), or annotation files with outlines
    (:func:`load_annotation_segmentation`)."""
    from cnnkit.data.annotations import AnnotationError, detect_format

    root = Path(root)
    expected = (
        f"expected a folder of {IMAGES}/ and {MASKS}/, or annotations with polygons, RLE or "
        "masks (COCO, VIA, LabelMe)"
    )
    if not root.exists():
        raise ValueError(f"{root}: no such file or folder; {expected}")
    if root.is_dir() and (root / MASKS).is_dir():
        if skip_invalid:
            raise ValueError(
                f"{root}: --skip-invalid leaves out bad records of annotation files; this is a "
                f"folder of {IMAGES}/ and {MASKS}/"
            )
        return load_segmentation_folder(root, channels, image_size)
    try:
        fmt = detect_format(root)
    except AnnotationError as exc:
        raise ValueError(
            f"{root}: neither a segmentation folder nor annotations ({exc}); {expected}"
        ) from None
    return load_annotation_segmentation(root, channels, image_size, skip_invalid, fmt)


def split_indices(
    n: int, fractions: Sequence[float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random split of ``n`` items by ``fractions`` (train, valid, test), each sorted;
    the training split gets the rounding remainder (at least one item)."""
    order = np.random.default_rng(seed).permutation(n)
    n_valid = min(round(n * fractions[1]), n - 1)
    n_test = min(round(n * fractions[2]), n - 1 - n_valid)
    n_train = n - n_valid - n_test
    train, valid, test = np.split(order, [n_train, n_train + n_valid])
    return np.sort(train), np.sort(valid), np.sort(test)


def segmentation_data(
    root: str | os.PathLike,
    channels: int | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    fractions: Sequence[float] | None = None,
    seed: int = 0,
    skip_invalid: bool = False,
) -> ImageData:
    """A segmentation folder or annotation files (:func:`load_segmentation_files`) as ``ImageData``
    for ``load_data(root, task="segment")``: a seeded random 75/15/10 split (no stratification: an
    image holds many classes), uint8 tensors served by ``TensorBatches``, mean/std of the training
    images unless given; ``ImageData.warnings`` lists the records ``skip_invalid`` left out."""
    from cnnkit.data.datasets import SPLITS, DataMeta, ImageData, channel_stats
    from cnnkit.data.folder import SPLIT_FRACTIONS

    fractions = tuple(fractions or SPLIT_FRACTIONS)
    channels = channels or 3
    files = load_segmentation_files(root, channels, image_size, skip_invalid)
    indices = dict(zip(SPLITS, split_indices(len(files.images), fractions, seed), strict=True))
    splits: dict[str, tuple[Any, Any] | None] = {
        name: (files.images[index], files.masks[index]) if len(index) else None
        for name, index in indices.items()
    }
    if mean is None or std is None:
        mean, std = channel_stats(files.images[indices["train"]])
    height, width = files.images.shape[2:]
    meta = DataMeta(
        str(root),
        (channels, height, width),
        files.class_names,
        tuple(mean),
        tuple(std),
        source={
            "format": files.format,
            **({"annotations": files.annotation_format} if files.annotation_format else {}),
            "root": str(Path(root).resolve()),
            "task": "segment",
            "image_size": image_size,
            "fractions": list(fractions),
            "seed": seed,
            "counts": {k: len(v) for k, v in indices.items()},
            **({"skip_invalid": True} if skip_invalid else {}),  # so evaluate skips them again
        },
    )
    return ImageData(meta, splits, files.warnings)
