"""Fuzzing the readers of untrusted files with hypothesis: the IDX parser, the five annotation
readers and the image decoder, each on 2,000 generated files (valid ones, valid ones mutated, and
noise). The only exception allowed is cnnkit's own error for that reader (``IDXError``,
``AnnotationError``, ``ImageDecodeError``), and its message must name the file.

Derandomized (a fixed seed: the same files on every run) and bounded by ``max_examples``, so it
runs in ``./run test`` in a stable time.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnkit.data.annotations import AnnotationError, read_annotations
from cnnkit.data.idx import IDXError, read_idx
from cnnkit.data.images import ImageDecodeError, read_image

EXAMPLES = 2000
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Strings without "/" or ".": a fuzzed path never leaves the test's folder (a YOLO "path: /"
# would make the reader walk the whole disk, which is what the user asked for, not a bug).
SAFE_TEXT = st.text(alphabet="abcxyz019 _-:#{}[]<>&\"'\\\n\x00é", max_size=8)
JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | SAFE_TEXT
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SAFE_TEXT, inner, max_size=4),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="cnnkit-fuzz-") as folder:
        yield Path(folder)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON-like document: dict keys and list indices, depth first."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, template: Any) -> Any:
    """``template`` with 0-3 random edits: a value replaced by any JSON value, a key or list item
    deleted, a list item duplicated."""
    doc = copy.deepcopy(template)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            doc = draw(JSON_VALUE)
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON_VALUE)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    return doc


def _truncated(draw: st.DrawFn, text: str) -> str:
    """Usually the text itself; sometimes cut short (a half-written file)."""
    if draw(st.booleans()) and draw(st.booleans()):
        return text[: draw(st.integers(0, len(text)))]
    return text


def _names_the_file(error: Exception, folder: Path) -> None:
    assert str(folder) in str(error), f"the error names no file: {error}"


# ---- IDX ----------------------------------------------------------------------------------------


@st.composite
def idx_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["valid", "header", "noise"]))
    if kind == "noise":
        return draw(st.binary(max_size=64))
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]))
    shape = draw(st.lists(st.integers(0, 4) | st.integers(0, 2**32 - 1), min_size=0, max_size=4))
    header = bytes([0, 0, code, len(shape)]) + np.asarray(shape, ">u4").tobytes()
    if kind == "valid" and all(s <= 4 for s in shape):
        itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
        body = bytes(int(np.prod(shape, dtype=np.int64)) * itemsize)
    else:
        body = draw(st.binary(max_size=32))
    data = header + body
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        data = gzip.compress(data, mtime=0)
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
    return data


@FUZZ
@given(data=idx_files())
def test_idx_parser_raises_only_idxerror_naming_the_file(workdir, data):
    path = workdir / "fuzz-idx-ubyte.gz"
    path.write_bytes(data)
    try:
        tensor = read_idx(path)
    except IDXError as error:
        event("IDXError")
        _names_the_file(error, workdir)
    else:
        event("read")
        assert tensor.numel() * tensor.element_size() <= len(data) + 1024  # no invented data


# ---- images -------------------------------------------------------------------------------------


def _encoded(fmt: str, mode: str) -> bytes:
    buffer = io.BytesIO()
    pixels = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


VALID_IMAGES = [
    _encoded("PNG", "RGB"),
    _encoded("PNG", "P"),
    _encoded("PNG", "LA"),
    _encoded("JPEG", "RGB"),
    _encoded("GIF", "P"),
    _encoded("BMP", "RGB"),
    _encoded("TIFF", "CMYK"),
    _encoded("WEBP", "RGB"),
]


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_IMAGES)))
    kind = draw(st.sampled_from(["valid", "flipped", "cut", "noise"]))
    if kind == "noise":
        return bytes(data[:8]) + draw(st.binary(max_size=64))
    if kind == "flipped":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if kind == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@FUZZ
@given(data=image_files(), mode=st.sampled_from(["RGB", "L"]))
def test_image_decoder_raises_only_imagedecodeerror_naming_the_file(workdir, data, mode):
    path = workdir / "fuzz-image"
    path.write_bytes(data)
    try:
        image = read_image(path, mode)
    except ImageDecodeError as error:
        event("ImageDecodeError")
        _names_the_file(error, workdir)
    else:
        event("decoded")
        assert image.ndim == 3 and image.shape[0] == (3 if mode == "RGB" else 1)


# ---- annotations --------------------------------------------------------------------------------

COCO = {
    "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 6}],
    "annotations": [
        {
            "id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 2], "area": 6,
            "iscrowd": 0, "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]],
        },
        {
            "id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 2, 2], "area": 4,
            "iscrowd": 1, "segmentation": {"size": [6, 8], "counts": [0, 2, 4, 2, 40]},
        },
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
}  # fmt: skip
LABELME = {
    "version": "5.0.1",
    "shapes": [
        {"label": "cat", "points": [[1, 1], [4, 3]], "shape_type": "rectangle", "group_id": None},
        {"label": "dog", "points": [[0, 0], [5, 0], [5, 4]], "shape_type": "polygon"},
    ],
    "imagePath": "a.png",
    "imageHeight": 6,
    "imageWidth": 8,
    "imageData": None,
}
VIA = {
    "_via_img_metadata": {
        "a.png90": {
            "filename": "a.png",
            "size": 90,
            "regions": [
                {
                    "shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 3, "height": 2},
                    "region_attributes": {"class": "cat"},
                },
                {
                    "shape_attributes": {
                        "name": "polygon", "all_points_x": [0, 5, 5], "all_points_y": [0, 0, 4],
                    },
                    "region_attributes": {"class": "dog"},
                },
            ],
            "file_attributes": {},
        }
    },
    "_via_attributes": {
        "region": {"class": {"type": "dropdown", "options": {"cat": "", "dog": ""}}},
        "file": {},
    },
}  # fmt: skip
VOC = {
    "filename": "a.png",
    "size": {"width": 8, "height": 6, "depth": 3},
    "object": [
        {"name": "cat", "difficult": 0, "truncated": 1,
         "bndbox": {"xmin": 2, "ymin": 2, "xmax": 4, "ymax": 3}},
        {"name": "dog", "bndbox": {"xmin": 1, "ymin": 1, "xmax": 8, "ymax": 6}},
    ],
}  # fmt: skip
YOLO = {"names": ["cat", "dog"], "train": "images"}
YOLO_LINES = [["0", "0.5", "0.5", "0.25", "0.5"], ["1", "0.25", "0.25", "0.5", "0.5"]]


def _xml(tag: str, value: Any) -> str:
    if isinstance(value, dict):
        return f"<{tag}>" + "".join(_xml(k, v) for k, v in value.items()) + f"</{tag}>"
    if isinstance(value, list):
        return "".join(_xml(tag, v) for v in value)
    text = str(value).replace("&", "&amp;").replace("<", "&lt;")
    return f"<{tag}>{text}</{tag}>"


def _safe_tag(key: Any) -> str:
    return "".join(c for c in str(key) if c.isalnum()) or "x"


def _tags(value: Any) -> Any:
    """Keys turned into XML tag names (a mutated key may hold any text)."""
    if isinstance(value, dict):
        return {_safe_tag(k): _tags(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tags(v) for v in value]
    return value


def _dataset(workdir: Path, name: str) -> Path:
    folder = workdir / name
    if not folder.exists():
        (folder / "images").mkdir(parents=True)
        for where in (folder, folder / "images"):
            Image.new("RGB", (8, 6), (10, 20, 30)).save(where / "a.png")
    return folder


def _read(folder: Path, fmt: str, skip_invalid: bool, **options: Any) -> None:
    try:
        result = read_annotations(folder, fmt, skip_invalid=skip_invalid, **options)
    except AnnotationError as error:
        event("AnnotationError")  # --hypothesis-show-statistics shows the share of each outcome
        _names_the_file(error, folder)
    else:
        event("read")
        assert all(len(image.boxes) == len(image.labels) for image in result.images)


@FUZZ
@given(data=st.data(), skip_invalid=st.booleans())
def test_coco_reader_raises_only_annotationerror(workdir, data, skip_invalid):
    folder = _dataset(workdir, "coco")
    text = json.dumps(data.draw(mutated(COCO)))
    (folder / "annotations.json").write_text(_truncated(data.draw, text))
    _read(folder, "coco", skip_invalid, check_images=False)


@FUZZ
@given(data=st.data(), skip_invalid=st.booleans())
def test_labelme_reader_raises_only_annotationerror(workdir, data, skip_invalid):
    folder = _dataset(workdir, "labelme")
    (folder / "labelme").mkdir(exist_ok=True)
    text = json.dumps(data.draw(mutated(LABELME)))
    (folder / "labelme" / "a.json").write_text(_truncated(data.draw, text))
    _read(folder, "labelme", skip_invalid, check_images=False)


@FUZZ
@given(data=st.data(), skip_invalid=st.booleans())
def test_via_reader_raises_only_annotationerror(workdir, data, skip_invalid):
    folder = _dataset(workdir, "via")
    text = json.dumps(data.draw(mutated(VIA)))
    (folder / "via_project.json").write_text(_truncated(data.draw, text))
    _read(folder, "via", skip_invalid)


@FUZZ
@given(data=st.data(), skip_invalid=st.booleans())
def test_voc_reader_raises_only_annotationerror(workdir, data, skip_invalid):
    folder = _dataset(workdir, "voc")
    (folder / "Annotations").mkdir(exist_ok=True)
    text = _xml("annotation", _tags(data.draw(mutated(VOC))))
    (folder / "Annotations" / "a.xml").write_text(_truncated(data.draw, text))
    _read(folder, "voc", skip_invalid, check_images=False)


@FUZZ
@given(data=st.data(), skip_invalid=st.booleans())
def test_yolo_reader_raises_only_annotationerror(workdir, data, skip_invalid):
    folder = _dataset(workdir, "yolo")
    (folder / "labels").mkdir(exist_ok=True)
    text = yaml.safe_dump(data.draw(mutated(YOLO)))
    (folder / "data.yaml").write_text(_truncated(data.draw, text))
    token = st.sampled_from(["0", "1", "2", "-1", "0.5", "1.5", "nan", "inf", "1e999", "x", ""])
    lines = data.draw(mutated(YOLO_LINES))
    lines = lines if isinstance(lines, list) else [lines]
    if data.draw(st.booleans()):
        lines.append(data.draw(st.lists(token, max_size=6)))
    rows = [" ".join(map(str, line)) if isinstance(line, list) else str(line) for line in lines]
    (folder / "labels" / "a.txt").write_text("\n".join(rows))
    _read(folder, "yolo", skip_invalid)
