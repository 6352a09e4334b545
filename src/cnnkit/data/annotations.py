"""Boxes and masks as annotation tools write them: COCO, Pascal VOC, YOLO, VIA and LabelMe.

In memory (``Annotations`` / ``AnnotatedImage``) a box is ``(x1, y1, x2, y2)`` in **continuous pixel
coordinates**: (0, 0) is the top-left corner of the top-left pixel, so a box covering pixel columns
``i..j`` has ``x1 = i`` and ``x2 = j + 1``, and a box lies in the image when
``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``. ``labels`` index ``Annotations.classes``;
``masks`` (optional) are bool (M, H, W), one per box.

Formats and their conventions (``read_annotations`` / ``write_annotations``); cnnkit writes every
format into a dataset folder ``DIR`` whose images lie in ``DIR/images/`` (``file_name`` is relative
to that folder):

- ``coco`` (``DIR/annotations.json``; Lin et al. 2014, the COCO data format): ``bbox`` is
  ``[x, y, w, h]`` in the same continuous coordinates, so ``x2 = x + w``; category ids may be
  non-contiguous and are kept (``Annotations.category_ids``, classes in the file's order) for
  writing back; ``segmentation`` is read as polygons or RLE (compressed or not) through
  ``pycocotools.mask`` and written as compressed RLE, which is exact; ``iscrowd`` is kept; image
  ids are kept (``AnnotatedImage.image_id``); annotation ids are renumbered 1, 2, ... on writing.
- ``voc`` (``DIR/Annotations/*.xml``, one file per image, as LabelImg writes them; Everingham et al.
  2010): ``xmin ymin xmax ymax`` are 1-based inclusive pixel indices, so ``x1 = xmin - 1``,
  ``y1 = ymin - 1``, ``x2 = xmax``, ``y2 = ymax`` (the Detectron convention), and written back the
  same way; ``difficult`` and ``truncated`` are kept. VOC has no class list: cnnkit writes
  ``DIR/classes.txt`` (one name a line, LabelImg's ``predefined_classes.txt``) and reads it when
  present; without it the classes are the names found, sorted.
- ``yolo`` (the Ultralytics layout): ``DIR/data.yaml`` (read with PyYAML) with ``names`` (a list or
  an index map ``{0: name, ...}``) and ``train``/``val``/``test`` image folders;
  ``labels/*.txt`` next to ``images/`` hold one ``class cx cy w h`` line per box, normalized by the
  image width and height, which are read from the image headers. cnnkit writes the numbers with
  Python's ``repr`` (17 significant digits), so float32 boxes come back exactly.
- ``via`` (``DIR/via_project.json``; the VGG Image Annotator 2, Dutta & Zisserman 2019): a VIA 2
  project (``_via_img_metadata``, ``_via_attributes``) or a plain VIA 2 JSON export (filename+size
  keys). ``rect`` regions ``{x, y, width, height}`` give ``x2 = x + width``; ``polygon`` regions
  ``{all_points_x, all_points_y}`` give their bounding box and a mask. The class is the value of a
  region attribute (``class_attribute``; default: the first one declared, else the first one found);
  the class list is that attribute's ``options`` when declared. Image sizes come from the image
  headers (VIA stores none). cnnkit writes ``rect`` regions only.
- ``labelme`` (``DIR/labelme/*.json``, one file per image, as the labelme app by K. Wada saves
  them): ``rectangle`` shapes (two corner points, any order), ``polygon`` shapes (box = the points'
  bounding box, plus a mask) and ``mask`` shapes (a base64 PNG of the mask's crop, ``points`` = its
  first and last pixel; box = the mask's tight box). Shapes sharing a label and a ``group_id`` are
  one object, as in labelme's ``shapes_to_label``: a rectangle among them gives the box, the others
  the mask. ``imagePath`` is relative to the JSON file. Class list as for VOC (``classes.txt``).
  cnnkit writes a mask as a ``mask`` shape (exact), grouped with a ``rectangle`` when the box is not
  the mask's tight box.

Polygons (COCO, VIA, LabelMe) are rasterized with ``pycocotools.mask``: a pixel belongs to the
polygon when its centre is inside, consistent with the box convention above (labelme's own
``shape_to_mask`` also fills the outline, so its masks can be a pixel larger). An image gets masks
when every one of its objects has one. Masks survive writing in COCO and LabelMe; VOC and YOLO
store boxes only, VIA is written with rectangles.

Errors: anything malformed (a missing field, a wrong type, a box outside the image or with
``x2 <= x1``, a polygon vertex outside the image, an unknown class, a missing image) raises one
``AnnotationError`` naming the file, the record and the field (a box overshooting the image by at
most ``EDGE_TOLERANCE`` = 0.01 pixel, the rounding of the stored numbers, is clipped to the edge
instead; a polygon vertex that far out is kept, and pycocotools clips it). With
``skip_invalid=True`` the bad record (an object, or an image with all its objects) is left out and
its message appended to ``Annotations.warnings``.

Writing never leaves a half-written dataset: every record is validated and every file rendered in
memory before the first file is written, and each file is written to a temporary name and renamed
into place. ``write_dataset`` builds a whole folder (images included) under a temporary name and
renames it into place.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import shutil
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from cnnkit.data.images import ImageDecodeError, image_size, read_image
from cnnkit.io import atomic_write_bytes

FORMATS = ("coco", "voc", "yolo", "via", "labelme")
IMAGES_FOLDER = "images"
COCO_FILE = "annotations.json"
VOC_FOLDER = "Annotations"
YOLO_FILE = "data.yaml"
VIA_FILE = "via_project.json"
LABELME_FOLDER = "labelme"
CLASSES_FILE = "classes.txt"
# A box may overshoot the image by this much (pixels) and is clipped: the rounding of files that
# store 2 decimals (COCO) or normalized 6-decimal numbers (YOLO), never a real annotation error.
EDGE_TOLERANCE = 0.01
IN_MEMORY = "<annotations>"  # the "file" named by errors about records that came from memory


class AnnotationError(ValueError):
    """A malformed annotation: ``file``, ``record`` and ``field`` say where, ``problem`` what."""

    def __init__(self, file: str | os.PathLike, record: str, field: str, problem: str) -> None:
        self.file, self.record, self.field, self.problem = str(file), record, field, problem
        super().__init__(f"{file}: {record}: field '{field}': {problem}")


# ---- In memory -------------------------------------------------------------------------------


@dataclass
class AnnotatedImage:
    """One image's objects. ``boxes`` float32 (M, 4) xyxy in continuous pixel coordinates (see the
    module docstring), ``labels`` int64 (M,), ``masks`` bool (M, height, width) or None;
    ``iscrowd`` (COCO), ``difficult`` and ``truncated`` (VOC) are bool (M,), all False by default."""

    file_name: str
    width: int
    height: int
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4))
    labels: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    masks: torch.Tensor | None = None
    iscrowd: torch.Tensor | None = None
    difficult: torch.Tensor | None = None
    truncated: torch.Tensor | None = None
    image_id: int | None = None  # COCO's, kept for writing back

    def __post_init__(self) -> None:
        self.boxes = torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1)
        m = len(self.boxes)
        if len(self.labels) != m:
            raise ValueError(f"{self.file_name}: {m} boxes but {len(self.labels)} labels")
        if self.masks is not None:
            self.masks = torch.as_tensor(self.masks).bool()
            if self.masks.shape != (m, self.height, self.width):
                raise ValueError(
                    f"{self.file_name}: masks of shape {tuple(self.masks.shape)}, "
                    f"expected {(m, self.height, self.width)}"
                )
        for name in ("iscrowd", "difficult", "truncated"):
            value = getattr(self, name)
            flags = torch.zeros(m, dtype=torch.bool) if value is None else torch.as_tensor(value)
            setattr(self, name, flags.bool().reshape(-1))
            if len(getattr(self, name)) != m:
                raise ValueError(f"{self.file_name}: {name} has {len(flags)} values, expected {m}")

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class Annotations:
    """A dataset's annotations: class names, images, and what writing back needs.

    ``category_ids`` are COCO's category id per class (None: 1, 2, ... on writing);
    ``image_root`` is the folder ``file_name`` is relative to; ``warnings`` lists the records that
    ``skip_invalid=True`` left out."""

    classes: list[str]
    images: list[AnnotatedImage]
    category_ids: list[int] | None = None
    image_root: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        root = self.image_root if self.image_root is not None else Path(".")
        return root / self.images[index].file_name


# ---- Reading helpers -------------------------------------------------------------------------


class _Issues:
    """Raises the first error, or (``skip_invalid``) collects every error as a warning."""

    def __init__(self, skip_invalid: bool) -> None:
        self.skip_invalid = skip_invalid
        self.messages: list[str] = []

    def report(self, error: AnnotationError) -> None:
        if not self.skip_invalid:
            raise error
        self.messages.append(str(error))


def _describe(value: Any) -> str:
    text = repr(value)
    return (
        f"{text[:60]}... ({type(value).__name__})"
        if len(text) > 60
        else f"{text} ({type(value).__name__})"
    )


def _field(
    record: Any, key: str, kind: type | tuple[type, ...], file: Path | str, where: str
) -> Any:
    """``record[key]`` checked to be a ``kind`` (bool is never a number)."""
    if not isinstance(record, dict):
        raise AnnotationError(file, where, key, f"found {_describe(record)}, expected an object")
    if key not in record:
        raise AnnotationError(file, where, key, "missing")
    value = record[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise AnnotationError(file, where, key, f"found {_describe(value)}, expected {names}")
    return value


def _size(record: Any, key: str, file: Path | str, where: str) -> int:
    """An image width or height: a positive integer."""
    value = _field(record, key, int, file, where)
    if value < 1:
        raise AnnotationError(file, where, key, f"found {value}, expected a positive integer")
    return value


def _number(value: Any, file: Path | str, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnnotationError(file, where, name, f"found {_describe(value)}, expected a number")
    return float(value)


def _text_number(
    element: ET.Element, path: str, file: Path, where: str, integer: bool = False
) -> float:
    """The number in XML child ``path`` of ``element``."""
    child = element.find(path)
    if child is None or child.text is None or not child.text.strip():
        raise AnnotationError(file, where, path, "missing")
    try:
        value = float(child.text.strip())
    except ValueError:
        raise AnnotationError(
            file, where, path, f"found {child.text.strip()!r}, expected a number"
        ) from None
    if integer and not value.is_integer():
        raise AnnotationError(file, where, path, f"found {value:g}, expected an integer")
    return value


def _check_box(
    box: Sequence[float],
    width: int,
    height: int,
    file: Path | str,
    where: str,
    name: str,
    tolerance: float = EDGE_TOLERANCE,
) -> list[float]:
    """``box`` (xyxy, float64) as float32 values, or an error if empty or outside the image. An
    overshoot of at most ``tolerance`` pixels is the file's rounding and is clipped to the edge."""
    with np.errstate(over="ignore"):  # a number past float32's range becomes inf: refused below
        x1, y1, x2, y2 = (float(np.float32(v)) for v in box)
    shown = "[" + ", ".join(f"{v:g}" for v in (x1, y1, x2, y2)) + "] (x1, y1, x2, y2)"
    if not all(np.isfinite([x1, y1, x2, y2])):
        raise AnnotationError(file, where, name, f"box {shown} is not finite")
    if x2 <= x1 or y2 <= y1:
        raise AnnotationError(
            file, where, name, f"box {shown} is empty: expected x2 > x1 and y2 > y1"
        )
    if min(x1, y1) < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
        raise AnnotationError(
            file,
            where,
            name,
            f"box {shown} lies outside the image, expected 0 <= x1 < x2 <= {width} and "
            f"0 <= y1 < y2 <= {height}",
        )
    return [max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))]


def _check_polygon(
    points: Sequence[float], width: int, height: int, file: Path | str, where: str, name: str
) -> None:
    """An error for a polygon vertex outside the image (beyond ``EDGE_TOLERANCE``), which
    ``pycocotools`` would clip without a word. VIA and LabelMe polygons need no such check: their
    box is the vertices' extent, checked by ``_check_box``; a COCO ``bbox`` is a separate field."""
    xs, ys = np.asarray(points[0::2], dtype=np.float64), np.asarray(points[1::2], dtype=np.float64)
    outside = (
        ~np.isfinite(xs)
        | ~np.isfinite(ys)
        | (xs < -EDGE_TOLERANCE)
        | (ys < -EDGE_TOLERANCE)
        | (xs > width + EDGE_TOLERANCE)
        | (ys > height + EDGE_TOLERANCE)
    )
    if outside.any():
        j = int(np.flatnonzero(outside)[0])
        raise AnnotationError(
            file,
            where,
            name,
            f"polygon point {j} ({xs[j]:g}, {ys[j]:g}) lies outside the image, expected "
            f"0 <= x <= {width} and 0 <= y <= {height}",
        )


def _class_index(
    name: Any, classes: list[str], fixed: bool, file: Path | str, where: str, key: str, source: str
) -> int:
    if not isinstance(name, str) or not name:
        raise AnnotationError(file, where, key, f"found {_describe(name)}, expected a class name")
    if name not in classes:
        if fixed:
            raise AnnotationError(
                file, where, key, f"unknown class {name!r}, expected one of {classes} ({source})"
            )
        classes.append(name)
    return classes.index(name)


def _decode(rle: dict[str, Any]) -> torch.Tensor:
    """An RLE decoded by ``pycocotools.mask`` into a bool (H, W) tensor."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools 2.0.x + NumPy 2: a DeprecationWarning per call
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        return torch.from_numpy(mask_utils.decode(rle).astype(bool))


def _polygon_mask(points: Sequence[float], height: int, width: int) -> torch.Tensor:
    """A polygon ``[x0, y0, x1, y1, ...]`` rasterized by ``pycocotools.mask`` (COCO's rule)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.merge(mask_utils.frPyObjects([list(map(float, points))], height, width))
    return _decode(rle)


def _image_size(path: Path, file: Path | str, where: str, name: str) -> tuple[int, int]:
    """(width, height) from the image header, after its EXIF rotation (no pixel is decoded)."""
    if not path.is_file():
        raise AnnotationError(file, where, name, f"image file {path} not found")
    try:
        return image_size(path)  # after the EXIF rotation, as the image is decoded and annotated
    except ImageDecodeError as exc:
        raise AnnotationError(file, where, name, f"not a readable image ({exc})") from None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            path, f"line {exc.lineno}", "(file)", f"not valid JSON: {exc.msg}"
        ) from None


def _images_folder(folder: Path) -> Path:
    """``folder/images`` when it exists (cnnkit's layout), else ``folder``."""
    return folder / IMAGES_FOLDER if (folder / IMAGES_FOLDER).is_dir() else folder


def _read_classes_file(folder: Path, classes: Sequence[str] | None) -> tuple[list[str], bool, str]:
    """The fixed class list (argument, then ``classes.txt``) or an open one, and where it came from."""
    if classes is not None:
        return list(classes), True, "the classes argument"
    path = folder / CLASSES_FILE
    if path.is_file():
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [n for n in names if n], True, str(path)
    return [], False, ""


def _sorted_classes(classes: list[str], images: list[AnnotatedImage]) -> list[str]:
    """Classes found in files in sorted order, labels renumbered to match."""
    order = sorted(classes)
    remap = torch.tensor([order.index(c) for c in classes], dtype=torch.int64)
    for image in images:
        if len(image):
            image.labels = remap[image.labels]
    return order


def _masks_if_complete(masks: list[torch.Tensor | None]) -> torch.Tensor | None:
    """The objects' masks stacked (M, H, W) when every object has one, else None."""
    if masks and all(m is not None for m in masks):
        return torch.stack(masks)  # type: ignore[arg-type]
    return None


# ---- COCO ------------------------------------------------------------------------------------


def _coco_segmentation(
    segmentation: Any, height: int, width: int, file: Path, where: str
) -> torch.Tensor | None:
    from pycocotools import mask as mask_utils

    if segmentation is None or segmentation == []:
        return None
    if isinstance(segmentation, list):  # polygons: [[x0, y0, x1, y1, ...], ...]
        if not all(
            isinstance(p, list)
            and len(p) >= 6
            and len(p) % 2 == 0
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
            for p in segmentation
        ):
            raise AnnotationError(
                file,
                where,
                "segmentation",
                f"found {_describe(segmentation)}, expected polygons [[x0, y0, x1, y1, x2, y2, ...], ...]",
            )
        for k, polygon in enumerate(segmentation):
            _check_polygon(polygon, width, height, file, where, f"segmentation[{k}]")
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict):
        size = segmentation.get("size")
        counts = segmentation.get("counts")
        if size != [height, width]:
            raise AnnotationError(
                file, where, "segmentation.size", f"found {size!r}, expected [{height}, {width}]"
            )
        if isinstance(counts, list):  # uncompressed RLE (iscrowd=1 in the COCO files)
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(counts, str):
            rle = {"size": size, "counts": counts.encode("ascii")}
        else:
            raise AnnotationError(
                file,
                where,
                "segmentation.counts",
                f"found {_describe(counts)}, expected a list or a string",
            )
    else:
        raise AnnotationError(
            file,
            where,
            "segmentation",
            f"found {_describe(segmentation)}, expected polygons or RLE",
        )
    return _decode(rle)


def _read_coco(
    path: Path, issues: _Issues, image_root: Path | None, check_images: bool
) -> Annotations:
    data = _load_json(path)
    top = "top level"
    categories = _field(data, "categories", list, path, top)
    images_json = _field(data, "images", list, path, top)
    annotations_json = _field(data, "annotations", list, path, top)
    root = image_root if image_root is not None else _images_folder(path.parent)

    category_ids: list[int] = []
    classes: list[str] = []
    for k, record in enumerate(categories):
        where = f"categories[{k}]"
        cid = _field(record, "id", int, path, where)
        name = _field(record, "name", str, path, where)
        if cid in category_ids:
            raise AnnotationError(path, where, "id", f"category id {cid} appears twice")
        category_ids.append(cid)
        classes.append(name)
    label_of = {cid: i for i, cid in enumerate(category_ids)}

    images: dict[int, AnnotatedImage] = {}
    for k, record in enumerate(images_json):
        where = f"images[{k}]" + (f" (id {record.get('id')})" if isinstance(record, dict) else "")
        try:
            iid = _field(record, "id", int, path, where)
            name = _field(record, "file_name", str, path, where)
            width = _size(record, "width", path, where)
            height = _size(record, "height", path, where)
            if iid in images:
                raise AnnotationError(path, where, "id", f"image id {iid} appears twice")
            if check_images and not (root / name).is_file():
                raise AnnotationError(
                    path, where, "file_name", f"image file {root / name} not found"
                )
            images[iid] = AnnotatedImage(name, width, height, image_id=iid)
        except AnnotationError as error:
            issues.report(error)

    objects: dict[int, list[tuple[list[float], int, bool, torch.Tensor | None]]] = {
        i: [] for i in images
    }
    for k, record in enumerate(annotations_json):
        where = f"annotations[{k}]" + (
            f" (id {record.get('id')})" if isinstance(record, dict) else ""
        )
        try:
            iid = _field(record, "image_id", int, path, where)
            if iid not in images:
                raise AnnotationError(
                    path,
                    where,
                    "image_id",
                    f"image {iid} is missing from 'images' (or was invalid)",
                )
            cid = _field(record, "category_id", int, path, where)
            if cid not in label_of:
                raise AnnotationError(
                    path,
                    where,
                    "category_id",
                    f"unknown class {cid}, expected one of {category_ids}",
                )
            bbox = _field(record, "bbox", list, path, where)
            if len(bbox) != 4:
                raise AnnotationError(
                    path, where, "bbox", f"found {len(bbox)} numbers, expected 4 [x, y, w, h]"
                )
            x, y, w, h = (_number(v, path, where, "bbox") for v in bbox)
            image = images[iid]
            box = _check_box([x, y, x + w, y + h], image.width, image.height, path, where, "bbox")
            crowd = record.get("iscrowd", 0)
            if crowd not in (0, 1) or isinstance(crowd, bool):
                raise AnnotationError(
                    path, where, "iscrowd", f"found {_describe(crowd)}, expected 0 or 1"
                )
            try:
                mask = _coco_segmentation(
                    record.get("segmentation"), image.height, image.width, path, where
                )
            except AnnotationError:
                raise
            except (ValueError, TypeError, OverflowError) as exc:  # pycocotools on bad RLE
                raise AnnotationError(
                    path, where, "segmentation", f"not valid polygons or RLE ({exc})"
                ) from None
            objects[iid].append((box, label_of[cid], bool(crowd), mask))
        except AnnotationError as error:
            issues.report(error)

    result = []
    for iid, image in images.items():
        found = objects[iid]
        if found:
            image.boxes = torch.tensor([o[0] for o in found], dtype=torch.float32)
            image.labels = torch.tensor([o[1] for o in found], dtype=torch.int64)
            image.iscrowd = torch.tensor([o[2] for o in found], dtype=torch.bool)
            image.difficult = image.truncated = torch.zeros(len(found), dtype=torch.bool)
            image.masks = _masks_if_complete([o[3] for o in found])
        result.append(image)
    return Annotations(classes, result, category_ids, root, issues.messages)


def _render_coco(annotations: Annotations) -> dict[str, bytes]:
    from pycocotools import mask as mask_utils

    ids = annotations.category_ids or list(range(1, len(annotations.classes) + 1))
    images: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []
    for k, image in enumerate(annotations.images):
        iid = image.image_id if image.image_id is not None else k + 1
        images.append(
            {"id": iid, "file_name": image.file_name, "width": image.width, "height": image.height}
        )
        for j in range(len(image)):
            x1, y1, x2, y2 = image.boxes[j].tolist()
            record: dict[str, Any] = {
                "id": len(objects) + 1,
                "image_id": iid,
                "category_id": ids[int(image.labels[j])],
                "bbox": [_plain(x1), _plain(y1), _plain(x2 - x1), _plain(y2 - y1)],
                "area": _plain((x2 - x1) * (y2 - y1)),
                "iscrowd": int(image.iscrowd[j]),  # type: ignore[index]
                "segmentation": [],
            }
            if image.masks is not None:
                rle = mask_utils.encode(np.asfortranarray(image.masks[j].numpy().astype(np.uint8)))
                record["segmentation"] = {
                    "size": rle["size"],
                    "counts": rle["counts"].decode("ascii"),
                }
                record["area"] = int(image.masks[j].sum())
            objects.append(record)
    categories = [
        {"id": cid, "name": name, "supercategory": ""}
        for cid, name in zip(ids, annotations.classes, strict=True)
    ]
    data = {
        "info": {"description": "written by cnnkit"},
        "licenses": [],
        "images": images,
        "annotations": objects,
        "categories": categories,
    }
    return {COCO_FILE: json.dumps(data).encode()}


def _plain(value: float) -> int | float:
    """An integral float as an int (``12``, not ``12.0``), others unchanged (``repr`` is exact)."""
    return int(value) if float(value).is_integer() else float(value)


# ---- Pascal VOC ------------------------------------------------------------------------------


def _voc_flag(obj: ET.Element, name: str, file: Path, where: str) -> bool:
    child = obj.find(name)
    if child is None or child.text is None:
        return False
    text = child.text.strip()
    if text not in ("0", "1"):
        raise AnnotationError(file, where, name, f"found {text!r}, expected 0 or 1")
    return text == "1"


def _read_voc(
    folder: Path, issues: _Issues, classes_arg: Sequence[str] | None, check_images: bool
) -> Annotations:
    xml_folder = folder / VOC_FOLDER if (folder / VOC_FOLDER).is_dir() else folder
    files = sorted(xml_folder.rglob("*.xml"))
    if not files:
        raise AnnotationError(folder, "folder", "*.xml", "no VOC XML file found")
    classes, fixed, source = _read_classes_file(folder, classes_arg)
    root = next(
        (folder / n for n in (IMAGES_FOLDER, "JPEGImages") if (folder / n).is_dir()), xml_folder
    )
    images = []
    for file in files:
        try:
            try:
                tree = ET.parse(file).getroot()
            except ET.ParseError as exc:
                raise AnnotationError(
                    file, "annotation", "(file)", f"not valid XML: {exc}"
                ) from None
            name_element = tree.find("filename")
            if name_element is None or not (name_element.text or "").strip():
                raise AnnotationError(file, "annotation", "filename", "missing")
            name = name_element.text.strip()  # type: ignore[union-attr]
            width = int(_text_number(tree, "size/width", file, "annotation", integer=True))
            height = int(_text_number(tree, "size/height", file, "annotation", integer=True))
            if width < 1 or height < 1:
                raise AnnotationError(
                    file, "annotation", "size", f"found {width}x{height}, expected positive sizes"
                )
            if check_images and not (root / name).is_file():
                raise AnnotationError(
                    file, "annotation", "filename", f"image file {root / name} not found"
                )
        except AnnotationError as error:
            issues.report(error)
            continue
        boxes, labels, difficult, truncated = [], [], [], []
        for j, obj in enumerate(tree.findall("object")):
            where = f"object {j}"
            try:
                name_tag = obj.find("name")
                label = _class_index(
                    None if name_tag is None else (name_tag.text or "").strip(),
                    classes,
                    fixed,
                    file,
                    where,
                    "name",
                    source,
                )
                xmin, ymin, xmax, ymax = (
                    _text_number(obj, f"bndbox/{k}", file, where)
                    for k in ("xmin", "ymin", "xmax", "ymax")
                )
                box = _check_box(
                    [xmin - 1, ymin - 1, xmax, ymax], width, height, file, where, "bndbox"
                )
                flags = (
                    _voc_flag(obj, "difficult", file, where),
                    _voc_flag(obj, "truncated", file, where),
                )
            except AnnotationError as error:
                issues.report(error)
                continue
            boxes.append(box)
            labels.append(label)
            difficult.append(flags[0])
            truncated.append(flags[1])
        images.append(
            AnnotatedImage(
                name,
                width,
                height,
                torch.tensor(boxes).reshape(-1, 4),
                torch.tensor(labels),
                difficult=torch.tensor(difficult),
                truncated=torch.tensor(truncated),
            )
        )
    if not fixed:
        classes = _sorted_classes(classes, images)
    return Annotations(classes, images, None, root, issues.messages)


def _voc_coordinate(value: float) -> str:
    return repr(_plain(value))


def _render_voc(annotations: Annotations) -> dict[str, bytes]:
    files = {CLASSES_FILE: "".join(f"{c}\n" for c in annotations.classes).encode()}
    for image in annotations.images:
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = IMAGES_FOLDER
        ET.SubElement(root, "filename").text = image.file_name
        ET.SubElement(ET.SubElement(root, "source"), "database").text = "Unknown"
        size = ET.SubElement(root, "size")
        ET.SubElement(size, "width").text = str(image.width)
        ET.SubElement(size, "height").text = str(image.height)
        ET.SubElement(size, "depth").text = "3"  # LabelImg's value; cnnkit does not track channels
        ET.SubElement(root, "segmented").text = "0"
        for j in range(len(image)):
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = annotations.classes[int(image.labels[j])]
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = str(int(image.truncated[j]))  # type: ignore[index]
            ET.SubElement(obj, "difficult").text = str(int(image.difficult[j]))  # type: ignore[index]
            bndbox = ET.SubElement(obj, "bndbox")
            x1, y1, x2, y2 = image.boxes[j].tolist()
            for key, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
                ET.SubElement(bndbox, key).text = _voc_coordinate(value)
        ET.indent(root)
        stem = str(Path(image.file_name).with_suffix(".xml"))
        files[f"{VOC_FOLDER}/{stem}"] = ET.tostring(root, encoding="utf-8")
    return files


# ---- YOLO (Ultralytics) ----------------------------------------------------------------------


def _yolo_names(data: Any, file: Path) -> list[str]:
    names = _field(data, "names", (list, dict), file, "top level")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise AnnotationError(
                file,
                "top level",
                "names",
                f"index map with keys {sorted(names)}, expected 0..{len(names) - 1}",
            )
        names = [names[i] for i in range(len(names))]
    if not all(isinstance(n, str) and n for n in names):
        raise AnnotationError(
            file, "top level", "names", f"found {_describe(names)}, expected class names"
        )
    return list(names)


def _read_yolo(path: Path, issues: _Issues, check_images: bool) -> Annotations:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise AnnotationError(path, "top level", "(file)", f"not valid YAML: {exc}") from None
    classes = _yolo_names(data, path)
    base = path.parent
    if isinstance(data.get("path"), str) and data["path"]:
        given = Path(data["path"])
        base = given if given.is_absolute() else path.parent / given
    folders: list[Path] = []
    for key in ("train", "val", "test"):
        value = data.get(key)
        for entry in (
            [value] if isinstance(value, str) else value if isinstance(value, list) else []
        ):
            if isinstance(entry, str) and (base / entry).is_dir() and (base / entry) not in folders:
                folders.append(base / entry)
    folders = folders or [base / IMAGES_FOLDER]
    root = (
        base / IMAGES_FOLDER
        if all(base / IMAGES_FOLDER in (f, *f.parents) for f in folders)
        else base
    )
    from cnnkit.data.folder import IMAGE_EXTENSIONS

    image_paths = sorted(
        p
        for f in folders
        for p in f.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    expected_labels = set()
    images = []
    for image_path in image_paths:
        label_path = _yolo_label_path(image_path)
        expected_labels.add(label_path)
        name = image_path.relative_to(root).as_posix()
        width, height = _image_size(image_path, path, f"image {name}", "size")
        boxes, labels = [], []
        if label_path.is_file():
            for n, line in enumerate(label_path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                where = f"line {n}"
                try:
                    tokens = line.split()
                    if len(tokens) != 5:
                        raise AnnotationError(
                            label_path,
                            where,
                            "class cx cy w h",
                            f"found {len(tokens)} values, expected 5",
                        )
                    try:
                        label = int(tokens[0])
                    except ValueError:
                        raise AnnotationError(
                            label_path, where, "class", f"found {tokens[0]!r}, expected an integer"
                        ) from None
                    if not 0 <= label < len(classes):
                        raise AnnotationError(
                            label_path,
                            where,
                            "class",
                            f"unknown class {label}, expected 0..{len(classes) - 1} ({path} names)",
                        )
                    try:
                        cx, cy, w, h = (float(t) for t in tokens[1:])
                    except ValueError:
                        raise AnnotationError(
                            label_path, where, "cx cy w h", f"found {tokens[1:]}, expected numbers"
                        ) from None
                    box = [
                        (cx - w / 2) * width,
                        (cy - h / 2) * height,
                        (cx + w / 2) * width,
                        (cy + h / 2) * height,
                    ]
                    boxes.append(_check_box(box, width, height, label_path, where, "cx cy w h"))
                    labels.append(label)
                except AnnotationError as error:
                    issues.report(error)
        images.append(
            AnnotatedImage(
                name, width, height, torch.tensor(boxes).reshape(-1, 4), torch.tensor(labels)
            )
        )
    if check_images:
        for folder in {_yolo_label_path(f / "x.png").parent for f in folders}:
            for label_path in sorted(folder.rglob("*.txt")) if folder.is_dir() else []:
                if label_path not in expected_labels:
                    issues.report(
                        AnnotationError(
                            label_path,
                            "file",
                            "(image)",
                            "no image with this name in the image folders",
                        )
                    )
    return Annotations(classes, images, None, root, issues.messages)


def _yolo_label_path(image_path: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder in the path becomes ``labels``, suffix .txt."""
    parts = list(image_path.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == IMAGES_FOLDER:
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _render_yolo(annotations: Annotations) -> dict[str, bytes]:
    import yaml

    spec = {
        "train": IMAGES_FOLDER,
        "val": IMAGES_FOLDER,
        "names": dict(enumerate(annotations.classes)),
    }
    files = {YOLO_FILE: yaml.safe_dump(spec, sort_keys=False).encode()}
    for image in annotations.images:
        lines = []
        for j in range(len(image)):
            x1, y1, x2, y2 = image.boxes[j].double().tolist()
            numbers = (
                (x1 + x2) / 2 / image.width,
                (y1 + y2) / 2 / image.height,
                (x2 - x1) / image.width,
                (y2 - y1) / image.height,
            )
            lines.append(f"{int(image.labels[j])} " + " ".join(repr(v) for v in numbers) + "\n")
        files[f"labels/{Path(image.file_name).with_suffix('.txt')}"] = "".join(lines).encode()
    return files


# ---- VIA (VGG Image Annotator 2) -------------------------------------------------------------


def _read_via(
    path: Path,
    issues: _Issues,
    classes_arg: Sequence[str] | None,
    class_attribute: str | None,
    image_root: Path | None,
) -> Annotations:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(
            path, "top level", "(file)", f"found {_describe(data)}, expected an object"
        )
    metadata = (
        _field(data, "_via_img_metadata", dict, path, "top level")
        if "_via_img_metadata" in data
        else data
    )
    declared = _nested(data, "_via_attributes", "region") or {}
    if not isinstance(declared, dict):
        raise AnnotationError(
            path, "_via_attributes", "region", f"found {_describe(declared)}, expected an object"
        )
    attribute = class_attribute or next(iter(declared), None)
    classes, fixed, source = [], False, ""
    options = _nested(declared, attribute or "", "options")
    if classes_arg is not None:
        classes, fixed, source = list(classes_arg), True, "the classes argument"
    elif options:
        if not isinstance(options, dict | list) or not all(isinstance(o, str) for o in options):
            raise AnnotationError(
                path,
                f"_via_attributes.region.{attribute}",
                "options",
                f"found {_describe(options)}, expected class names",
            )
        classes, fixed = list(options), True
        source = f"_via_attributes.region.{attribute}.options"
    root = image_root
    if root is None:
        folder = _nested(data, "_via_settings", "core", "default_filepath") or ""
        root = (
            path.parent / folder
            if isinstance(folder, str) and folder and (path.parent / folder).is_dir()
            else _images_folder(path.parent)
        )
    images = []
    for key, record in metadata.items():
        where = f"image {key!r}"
        try:
            name = _field(record, "filename", str, path, where)
            regions = _field(record, "regions", (list, dict), path, where)
            width, height = _image_size(root / name, path, where, "filename")
        except AnnotationError as error:
            issues.report(error)
            continue
        boxes, labels, masks = [], [], []
        for j, region in enumerate(regions.values() if isinstance(regions, dict) else regions):
            here = f"{where} region {j}"
            try:
                shape = _field(region, "shape_attributes", dict, path, here)
                values = _field(region, "region_attributes", dict, path, here)
                if attribute is None:
                    attribute = next(iter(values), None)
                if attribute not in values:
                    raise AnnotationError(
                        path, here, f"region_attributes.{attribute}", "missing (it names the class)"
                    )
                value = values[attribute]
                if isinstance(value, dict):  # a checkbox attribute: {"name": true}
                    value = next((k for k, v in value.items() if v), None)
                label = _class_index(
                    value, classes, fixed, path, here, f"region_attributes.{attribute}", source
                )
                kind = _field(shape, "name", str, path, here + " shape_attributes")
                if kind == "rect":
                    x, y, w, h = (
                        _number(_field(shape, k, (int, float), path, here), path, here, k)
                        for k in ("x", "y", "width", "height")
                    )
                    box, mask = [x, y, x + w, y + h], None
                elif kind == "polygon":
                    xs = _field(shape, "all_points_x", list, path, here)
                    ys = _field(shape, "all_points_y", list, path, here)
                    if len(xs) != len(ys) or len(xs) < 3:
                        raise AnnotationError(
                            path,
                            here,
                            "all_points_x/all_points_y",
                            f"{len(xs)} x and {len(ys)} y values, expected the same number, at least 3",
                        )
                    xs = [_number(v, path, here, "all_points_x") for v in xs]
                    ys = [_number(v, path, here, "all_points_y") for v in ys]
                    box = [min(xs), min(ys), max(xs), max(ys)]
                    mask = _polygon_mask(
                        [v for p in zip(xs, ys, strict=True) for v in p], height, width
                    )
                else:
                    raise AnnotationError(
                        path,
                        here,
                        "shape_attributes.name",
                        f"found {kind!r}, expected 'rect' or 'polygon'",
                    )
                boxes.append(_check_box(box, width, height, path, here, "shape_attributes"))
            except AnnotationError as error:
                issues.report(error)
                continue
            labels.append(label)
            masks.append(mask)
        images.append(
            AnnotatedImage(
                name,
                width,
                height,
                torch.tensor(boxes).reshape(-1, 4),
                torch.tensor(labels),
                _masks_if_complete(masks),
            )
        )
    if not fixed:
        classes = _sorted_classes(classes, images)
    return Annotations(classes, images, None, root, issues.messages)


def _nested(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...``, or None where a level is missing or not an object (VIA's optional
    project blocks)."""
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _render_via(annotations: Annotations) -> dict[str, bytes]:
    metadata = {}
    for image in annotations.images:
        regions = []
        for j in range(len(image)):
            x1, y1, x2, y2 = image.boxes[j].tolist()
            regions.append(
                {
                    "shape_attributes": {
                        "name": "rect",
                        "x": _plain(x1),
                        "y": _plain(y1),
                        "width": _plain(x2 - x1),
                        "height": _plain(y2 - y1),
                    },
                    "region_attributes": {"class": annotations.classes[int(image.labels[j])]},
                }
            )
        # VIA keys an image by file name + file size in bytes; -1 is its value for a size unknown
        metadata[f"{image.file_name}-1"] = {
            "filename": image.file_name,
            "size": -1,
            "regions": regions,
            "file_attributes": {},
        }
    project = {
        "_via_settings": {
            "core": {"buffer_size": 18, "filepath": {}, "default_filepath": f"{IMAGES_FOLDER}/"},
            "project": {"name": "cnnkit"},
        },
        "_via_img_metadata": metadata,
        "_via_attributes": {
            "region": {
                "class": {
                    "type": "dropdown",
                    "description": "object class",
                    "options": {name: "" for name in annotations.classes},
                    "default_options": {},
                }
            },
            "file": {},
        },
        "_via_image_id_list": list(metadata),
    }
    return {VIA_FILE: json.dumps(project).encode()}


# ---- LabelMe ---------------------------------------------------------------------------------


def _labelme_mask(
    shape: dict[str, Any],
    points: list[list[float]],
    height: int,
    width: int,
    file: Path,
    where: str,
) -> torch.Tensor:
    """A LabelMe ``mask`` shape: a base64 PNG of the mask's crop, its top-left pixel at
    ``points[0]`` (rounded), pasted as LabelMe's ``shapes_to_label`` does."""
    encoded = _field(shape, "mask", str, file, where)
    try:
        with Image.open(io.BytesIO(base64.b64decode(encoded, validate=True))) as png:
            pixels = np.asarray(png)
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as exc:
        raise AnnotationError(file, where, "mask", f"not a base64-encoded PNG ({exc})") from None
    crop: np.ndarray = (pixels != 0).any(-1) if pixels.ndim == 3 else pixels != 0
    x1, y1 = (round(v) for v in points[0])
    crop_height, crop_width = crop.shape
    if x1 < 0 or y1 < 0 or x1 + crop_width > width or y1 + crop_height > height:
        raise AnnotationError(
            file,
            where,
            "mask",
            f"a {crop_width}x{crop_height} mask at ({x1}, {y1}) lies outside the {width}x{height} image",
        )
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y1 : y1 + crop_height, x1 : x1 + crop_width] = torch.from_numpy(crop)
    if not mask.any():
        raise AnnotationError(file, where, "mask", "the mask has no pixel set")
    return mask


def _tight_box(mask: torch.Tensor) -> list[float]:
    """The continuous xyxy box of a mask's pixels (last column + 1)."""
    rows = torch.nonzero(mask.any(1)).flatten()
    cols = torch.nonzero(mask.any(0)).flatten()
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def _read_labelme_shape(
    shape: Any, height: int, width: int, file: Path, where: str
) -> tuple[str, list[float], torch.Tensor | None]:
    """(shape type, box, mask or None) of one LabelMe shape."""
    kind = _field(shape, "shape_type", str, file, where) if "shape_type" in shape else "polygon"
    points = _field(shape, "points", list, file, where)
    if not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise AnnotationError(
            file, where, "points", f"found {_describe(points)}, expected [[x, y], ...]"
        )
    xs = [_number(p[0], file, where, "points") for p in points]
    ys = [_number(p[1], file, where, "points") for p in points]
    if kind == "rectangle" and len(points) == 2:
        box, mask = [min(xs), min(ys), max(xs), max(ys)], None
    elif kind == "polygon" and len(points) >= 3:
        box = [min(xs), min(ys), max(xs), max(ys)]
        mask = _polygon_mask([v for p in zip(xs, ys, strict=True) for v in p], height, width)
    elif kind == "mask" and len(points) == 2:
        mask = _labelme_mask(shape, points, height, width, file, where)
        box = _tight_box(mask)
    else:
        raise AnnotationError(
            file,
            where,
            "shape_type",
            f"{kind!r} with {len(points)} points, expected 'rectangle' or 'mask' with 2, "
            "'polygon' with 3 or more",
        )
    return kind, _check_box(box, width, height, file, where, "points"), mask


def _read_labelme(
    folder: Path, issues: _Issues, classes_arg: Sequence[str] | None, check_images: bool
) -> Annotations:
    json_folder = folder / LABELME_FOLDER if (folder / LABELME_FOLDER).is_dir() else folder
    files = sorted(json_folder.rglob("*.json"))
    if not files:
        raise AnnotationError(folder, "folder", "*.json", "no LabelMe JSON file found")
    classes, fixed, source = _read_classes_file(folder, classes_arg)
    root = _images_folder(folder)
    images = []
    for file in files:
        where = "top level"
        try:
            data = _load_json(file)
            image_path = _field(data, "imagePath", str, file, where)
            width = _size(data, "imageWidth", file, where)
            height = _size(data, "imageHeight", file, where)
            shapes = _field(data, "shapes", list, file, where)
            resolved = Path(os.path.normpath(file.parent / image_path.replace("\\", "/")))
            if check_images and not resolved.is_file():
                raise AnnotationError(file, where, "imagePath", f"image file {resolved} not found")
        except AnnotationError as error:
            issues.report(error)
            continue
        # LabelMe's instances: shapes sharing a label and a group_id are one object
        # (labelme.utils.shapes_to_label); a shape without group_id is an object of its own.
        groups: dict[tuple[Any, ...], list[tuple[int, str, list[float], torch.Tensor | None]]] = {}
        for j, shape in enumerate(shapes):
            here = f"shapes[{j}]"
            try:
                name = _field(shape, "label", str, file, here)
                label = _class_index(name, classes, fixed, file, here, "label", source)
                group = shape.get("group_id")
                if group is not None and (isinstance(group, bool) or not isinstance(group, int)):
                    raise AnnotationError(
                        file,
                        here,
                        "group_id",
                        f"found {_describe(group)}, expected an integer or null",
                    )
                kind, box, mask = _read_labelme_shape(shape, height, width, file, here)
            except AnnotationError as error:
                issues.report(error)
                continue
            key = (label, group) if group is not None else ("shape", j)
            groups.setdefault(key, []).append((label, kind, box, mask))
        boxes, labels, masks = [], [], []
        for parts in groups.values():
            # a rectangle in a group is the object's box; otherwise the box spans its shapes
            extent = [p[2] for p in parts if p[1] == "rectangle"] or [p[2] for p in parts]
            boxes.append(
                [
                    min(b[0] for b in extent),
                    min(b[1] for b in extent),
                    max(b[2] for b in extent),
                    max(b[3] for b in extent),
                ]
            )
            labels.append(parts[0][0])
            shaped = [p[3] for p in parts if p[3] is not None]
            masks.append(torch.stack(shaped).any(0) if shaped else None)
        images.append(
            AnnotatedImage(
                Path(os.path.relpath(resolved, root)).as_posix(),
                width,
                height,
                torch.tensor(boxes).reshape(-1, 4),
                torch.tensor(labels),
                _masks_if_complete(masks),
            )
        )
    if not fixed:
        classes = _sorted_classes(classes, images)
    return Annotations(classes, images, None, root, issues.messages)


def _labelme_shape(
    label: str, kind: str, points: list[list[Any]], group: int | None
) -> dict[str, Any]:
    return {
        "label": label,
        "points": points,
        "group_id": group,
        "description": "",
        "shape_type": kind,
        "flags": {},
    }


def _render_labelme(annotations: Annotations) -> dict[str, bytes]:
    files = {CLASSES_FILE: "".join(f"{c}\n" for c in annotations.classes).encode()}
    for image in annotations.images:
        json_name = Path(LABELME_FOLDER) / Path(image.file_name).with_suffix(".json")
        image_path = os.path.relpath(Path(IMAGES_FOLDER) / image.file_name, json_name.parent)
        shapes: list[dict[str, Any]] = []
        for j in range(len(image)):
            label = annotations.classes[int(image.labels[j])]
            box = image.boxes[j].tolist()
            rectangle = [[_plain(box[0]), _plain(box[1])], [_plain(box[2]), _plain(box[3])]]
            mask = image.masks[j] if image.masks is not None else None
            if mask is None or not mask.any():
                shapes.append(_labelme_shape(label, "rectangle", rectangle, None))
                continue
            # a "mask" shape: the mask's crop as a PNG, points = its first and last pixel
            x1, y1, x2, y2 = (int(v) for v in _tight_box(mask))
            buffer = io.BytesIO()
            Image.fromarray(mask[y1:y2, x1:x2].numpy()).save(buffer, format="png")
            exact = box == [x1, y1, x2, y2]
            group = None if exact else j  # a box that is not the mask's own: a rectangle joins it
            shaped = _labelme_shape(label, "mask", [[x1, y1], [x2 - 1, y2 - 1]], group)
            shaped["mask"] = base64.b64encode(buffer.getvalue()).decode("ascii")
            shapes.append(shaped)
            if not exact:
                shapes.append(_labelme_shape(label, "rectangle", rectangle, group))
        data: dict[str, Any] = {
            "version": "5.4.1",
            "flags": {},
            "shapes": shapes,
            "imagePath": Path(image_path).as_posix(),
            "imageData": None,
            "imageHeight": image.height,
            "imageWidth": image.width,
        }
        files[json_name.as_posix()] = json.dumps(data, indent=2).encode()
    return files


# ---- Public API ------------------------------------------------------------------------------


def detect_format(path: str | os.PathLike) -> str:
    """The format of a dataset file or folder, from its names and, for JSON, its top-level keys."""
    path = Path(path)
    if path.is_dir():
        for name, fmt in (
            (YOLO_FILE, "yolo"),
            ("data.yml", "yolo"),
            (COCO_FILE, "coco"),
            (VIA_FILE, "via"),
        ):
            if (path / name).is_file():
                return fmt
        if (path / VOC_FOLDER).is_dir() or any(path.glob("*.xml")):
            return "voc"
        if (path / LABELME_FOLDER).is_dir():
            return "labelme"
        jsons = sorted(path.glob("*.json"))
        if len(jsons) == 1:
            return _json_format(jsons[0])
        if jsons and _json_format(jsons[0]) == "labelme":
            return "labelme"
        raise AnnotationError(
            path,
            "folder",
            "(format)",
            f"cannot tell the format: expected {YOLO_FILE}, {COCO_FILE}, {VIA_FILE}, "
            f"{VOC_FOLDER}/ or *.xml, {LABELME_FOLDER}/ or LabelMe *.json",
        )
    if path.suffix.lower() in (".yaml", ".yml"):
        return "yolo"
    if path.suffix.lower() == ".xml":
        return "voc"
    if path.suffix.lower() == ".json":
        return _json_format(path)
    raise AnnotationError(
        path, "file", "(format)", "cannot tell the format, expected .json, .yaml or .xml"
    )


def _json_format(path: Path) -> str:
    data = _load_json(path)
    if isinstance(data, dict):
        if "images" in data and "annotations" in data:
            return "coco"
        if "shapes" in data:
            return "labelme"
        if "_via_img_metadata" in data or all(
            isinstance(v, dict) and "regions" in v for v in data.values()
        ):
            return "via"
    raise AnnotationError(
        path,
        "top level",
        "(format)",
        "not COCO (images, annotations), LabelMe (shapes) or VIA (regions)",
    )


def read_annotations(
    path: str | os.PathLike,
    format: str | None = None,
    *,
    skip_invalid: bool = False,
    classes: Sequence[str] | None = None,
    class_attribute: str | None = None,
    image_root: str | os.PathLike | None = None,
    check_images: bool = True,
) -> Annotations:
    """Read a dataset's annotations (see the module docstring for each format's conventions).

    ``path`` is the annotation file (COCO/VIA JSON, YOLO ``data.yaml``) or the dataset folder;
    ``format`` is detected when None. ``classes`` fixes the class list of the formats that have
    none (VOC, LabelMe, VIA), so a name outside it is an error; ``class_attribute`` is VIA's region
    attribute holding the class; ``image_root`` overrides where COCO/VIA images are looked for;
    ``check_images=False`` skips checking that COCO/VOC/LabelMe image files exist (YOLO and VIA read
    the sizes from the images, so they always need them). ``skip_invalid=True`` leaves bad records
    out and lists them in ``Annotations.warnings`` instead of raising ``AnnotationError``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    format = format or detect_format(path)
    if format not in FORMATS:
        raise ValueError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
    issues = _Issues(skip_invalid)
    root = Path(image_root) if image_root is not None else None
    if format == "coco":
        result = _read_coco(path / COCO_FILE if path.is_dir() else path, issues, root, check_images)
    elif format == "voc":
        result = _read_voc(path if path.is_dir() else path.parent, issues, classes, check_images)
    elif format == "yolo":
        if path.is_dir():
            path = path / YOLO_FILE if (path / YOLO_FILE).is_file() else path / "data.yml"
        result = _read_yolo(path, issues, check_images)
    elif format == "via":
        via_file = path / VIA_FILE if path.is_dir() else path
        result = _read_via(via_file, issues, classes, class_attribute, root)
    else:
        result = _read_labelme(
            path if path.is_dir() else path.parent, issues, classes, check_images
        )
    if any(image.masks is not None for image in result.images):
        for (
            image
        ) in result.images:  # in a dataset with masks, an image without objects has (0, H, W)
            if not len(image) and image.masks is None:
                image.masks = torch.zeros(0, image.height, image.width, dtype=torch.bool)
    return result


def validate_annotations(annotations: Annotations) -> None:
    """Raise ``AnnotationError`` for the first record that no format could hold (a box outside its
    image or empty, a label outside ``classes``, masks of the wrong size, a repeated file name)."""
    n = len(annotations.classes)
    if len(set(annotations.classes)) != n:
        raise AnnotationError(
            IN_MEMORY, "classes", "classes", f"repeated names in {annotations.classes}"
        )
    if annotations.category_ids is not None and len(annotations.category_ids) != n:
        raise AnnotationError(
            IN_MEMORY,
            "classes",
            "category_ids",
            f"{len(annotations.category_ids)} ids for {n} classes",
        )
    seen: set[str] = set()
    for i, image in enumerate(annotations.images):
        record = f"images[{i}] ({image.file_name})"
        if image.file_name in seen:
            raise AnnotationError(IN_MEMORY, record, "file_name", "appears twice")
        seen.add(image.file_name)
        for j in range(len(image)):
            where = f"{record} object {j}"
            box = image.boxes[j].tolist()
            _check_box(box, image.width, image.height, IN_MEMORY, where, "boxes", tolerance=0.0)
            label = int(image.labels[j])
            if not 0 <= label < n:
                raise AnnotationError(
                    IN_MEMORY, where, "labels", f"unknown class {label}, expected 0..{n - 1}"
                )


_RENDER: dict[str, Callable[[Annotations], dict[str, bytes]]] = {
    "coco": _render_coco,
    "voc": _render_voc,
    "yolo": _render_yolo,
    "via": _render_via,
    "labelme": _render_labelme,
}


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def write_annotations(annotations: Annotations, path: str | os.PathLike, format: str) -> list[Path]:
    """Write the annotation files of ``format`` into the dataset folder ``path`` (images are
    expected in ``path/images``; see the module docstring for the file names and conventions).

    Every record is validated and every file rendered before the first is written; each file is
    written through a temporary name and an atomic rename. Returns the paths written.
    """
    if format not in FORMATS:
        raise ValueError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
    validate_annotations(annotations)
    files = _RENDER[format](annotations)
    folder = Path(path)
    written = []
    for name, data in files.items():
        _write_atomic(folder / name, data)
        written.append(folder / name)
    return written


def write_dataset(
    annotations: Annotations,
    out: str | os.PathLike,
    format: str,
    *,
    write_images: Callable[[Path], None] | None = None,
) -> Path:
    """A whole dataset folder ``out``: images in ``out/images``, then the annotation files.

    Images are copied from ``annotations.image_root`` unless ``write_images(images_folder)`` writes
    them. The folder is built under a temporary name beside ``out`` and renamed into place, so
    ``out`` appears complete or not at all; an existing non-empty ``out`` is an error.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: already exists and is not an empty folder")
    validate_annotations(annotations)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        images = tmp / IMAGES_FOLDER
        images.mkdir()
        if write_images is not None:
            write_images(images)
        else:
            for i, image in enumerate(annotations.images):
                source = annotations.image_path(i)
                if not source.is_file():
                    raise FileNotFoundError(f"{source}: image of {image.file_name} not found")
                (images / image.file_name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, images / image.file_name)
        write_annotations(annotations, tmp, format)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---- Dataset ---------------------------------------------------------------------------------


class AnnotatedDataset(Dataset):
    """Images of an ``Annotations`` with their targets as ``tv_tensors``, so that a
    ``torchvision.transforms.v2`` transform moves boxes and masks with the image.

    Item ``i`` is ``(image, target)``: ``image`` a ``tv_tensors.Image`` uint8 (C, H, W) decoded
    with Pillow and converted to ``mode`` ("RGB" or "L"); ``target`` has ``boxes``
    (``tv_tensors.BoundingBoxes``, XYXY, ``canvas_size=(H, W)``), ``labels`` int64 and, when the
    image has masks, ``masks`` (``tv_tensors.Mask`` bool (M, H, W)).
    """

    def __init__(
        self,
        annotations: Annotations,
        root: str | os.PathLike | None = None,
        *,
        mode: str = "RGB",
        transforms: Callable[..., Any] | None = None,
    ) -> None:
        if mode not in ("RGB", "L"):
            raise ValueError(f"mode {mode!r}: expected 'RGB' or 'L'")
        self.annotations = annotations
        self.root = Path(root) if root is not None else annotations.image_root or Path(".")
        self.mode = mode
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.annotations.images)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        from torchvision import tv_tensors

        record = self.annotations.images[index]
        path = self.root / record.file_name
        tensor = read_image(path, self.mode)  # upright, 8 bits: cnnkit.data.images
        if tuple(tensor.shape[1:]) != (record.height, record.width):
            raise AnnotationError(
                path,
                f"image {record.file_name}",
                "width/height",
                f"the image is {tensor.shape[2]}x{tensor.shape[1]}, the annotations say {record.width}x{record.height}",
            )
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(
                record.boxes.clone(), format="XYXY", canvas_size=(record.height, record.width)
            ),
            "labels": record.labels.clone(),
        }
        if record.masks is not None:
            target["masks"] = tv_tensors.Mask(record.masks.clone())
        image_tv = tv_tensors.Image(tensor.contiguous())
        if self.transforms is not None:
            return self.transforms(image_tv, target)
        return image_tv, target


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Stack the images (all of one size) into (N, C, H, W); keep the targets as a list of dicts,
    since each image has its own number of objects."""
    shapes = {tuple(image.shape) for image, _ in batch}
    if len(shapes) > 1:
        raise ValueError(
            f"images of different shapes {sorted(shapes)} in one batch: resize them first"
        )
    return torch.stack([torch.as_tensor(image) for image, _ in batch]), [
        target for _, target in batch
    ]
