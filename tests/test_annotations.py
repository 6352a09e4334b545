"""cnnkit.data.annotations: the five annotation formats, their conventions, errors and datasets.

References: the COCO data format (bbox = [x, y, w, h]; pycocotools reads what cnnkit writes and
rasterizes its polygons), Pascal VOC as LabelImg writes it (1-based inclusive pixel indices, the
Detectron convention x1 = xmin - 1, x2 = xmax), the Ultralytics YOLO layout (data.yaml, labels/*.txt
with class cx cy w h normalized by the image size), the VGG Image Annotator 2 JSON and LabelMe JSON.
Expected numbers are computed by hand in each test.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from cnnkit.data.annotations import (
    FORMATS,
    AnnotatedDataset,
    AnnotatedImage,
    AnnotationError,
    Annotations,
    collate_detection,
    detect_format,
    read_annotations,
    write_annotations,
    write_dataset,
)

SIZES = {"a.png": (40, 30), "b.png": (25, 50), "empty.png": (16, 16)}  # name: (width, height)


def write_images(folder: Path, sizes: dict[str, tuple[int, int]] = SIZES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (width, height) in sizes.items():
        Image.fromarray(np.full((height, width, 3), 60, np.uint8)).save(folder / name)
    return folder


def sample(root: Path) -> Annotations:
    """Three images (one without objects), fractional and integral boxes, masks, flags, and COCO
    category ids that are not 1..K."""
    images = []
    mask_a = torch.zeros(2, 30, 40, dtype=torch.bool)
    mask_a[0, 2:10, 3:12] = True
    mask_a[1, 5:20, 1:7] = True
    images.append(
        AnnotatedImage(
            "a.png",
            40,
            30,
            [[3, 2, 12, 10], [1, 5, 7, 20]],
            [1, 0],
            mask_a,
            iscrowd=[False, True],
            difficult=[True, False],
            truncated=[False, True],
            image_id=17,
        )
    )
    mask_b = torch.zeros(1, 50, 25, dtype=torch.bool)
    mask_b[0, 10:41, 0:25] = True
    images.append(AnnotatedImage("b.png", 25, 50, [[0.25, 10, 25, 40.5]], [2], mask_b, image_id=3))
    images.append(
        AnnotatedImage("empty.png", 16, 16, masks=torch.zeros(0, 16, 16, dtype=bool), image_id=5)
    )
    return Annotations(["cat", "dog", "bird"], images, [4, 9, 2], write_images(root))


def assert_same_boxes(got: Annotations, expected: Annotations) -> None:
    assert got.classes == expected.classes
    assert [i.file_name for i in got.images] == [i.file_name for i in expected.images]
    for g, e in zip(got.images, expected.images, strict=True):
        assert (g.width, g.height) == (e.width, e.height)
        assert torch.equal(g.boxes, e.boxes), g.file_name
        assert torch.equal(g.labels, e.labels), g.file_name


def by_name(annotations: Annotations) -> Annotations:
    """Images sorted by file name (folder formats list files in name order)."""
    annotations.images.sort(key=lambda i: i.file_name)
    return annotations


# ---- Round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_classes_names_sizes_boxes_and_labels_exactly(tmp_path, fmt):
    original = sample(tmp_path / "src")
    out = write_dataset(original, tmp_path / fmt, fmt)
    assert_same_boxes(by_name(read_annotations(out)), by_name(sample(tmp_path / "src2")))


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_is_detected_from_the_folder(tmp_path, fmt):
    assert detect_format(write_dataset(sample(tmp_path / "src"), tmp_path / fmt, fmt)) == fmt


def test_coco_round_trip_keeps_masks_iscrowd_category_and_image_ids(tmp_path):
    original = sample(tmp_path / "src")
    back = read_annotations(write_dataset(original, tmp_path / "coco", "coco"))
    assert back.category_ids == [4, 9, 2]
    for g, e in zip(back.images, original.images, strict=True):
        assert torch.equal(g.masks, e.masks)
        assert torch.equal(g.iscrowd, e.iscrowd)
        assert g.image_id == e.image_id


def test_voc_round_trip_keeps_difficult_and_truncated(tmp_path):
    back = read_annotations(write_dataset(sample(tmp_path / "src"), tmp_path / "voc", "voc"))
    assert back.images[0].difficult.tolist() == [True, False]
    assert back.images[0].truncated.tolist() == [False, True]


def test_labelme_round_trip_keeps_masks_as_mask_shapes(tmp_path):
    original = sample(tmp_path / "src")
    back = by_name(read_annotations(write_dataset(original, tmp_path / "lm", "labelme")))
    for g, e in zip(back.images, by_name(original).images, strict=True):
        assert torch.equal(g.masks, e.masks), g.file_name


def test_labelme_groups_a_mask_with_the_rectangle_of_a_box_that_is_not_its_own(tmp_path):
    # b.png: the mask covers rows 10..40, columns 0..24, the box is (0.25, 10, 25, 40.5)
    out = write_dataset(sample(tmp_path / "src"), tmp_path / "lm", "labelme")
    shapes = json.loads((out / "labelme" / "b.json").read_text())["shapes"]
    assert [(s["shape_type"], s["group_id"]) for s in shapes] == [("mask", 0), ("rectangle", 0)]
    assert shapes[0]["points"] == [[0, 10], [24, 40]]  # first and last pixel of the crop
    shapes = json.loads((out / "labelme" / "a.json").read_text())["shapes"]
    assert [(s["shape_type"], s["group_id"]) for s in shapes] == [("mask", None), ("mask", None)]


def test_labelme_shapes_sharing_a_group_id_are_one_object(tmp_path):
    write_images(tmp_path, {"x.png": (10, 8)})
    squares = [[[0, 0], [2, 0], [2, 2], [0, 2]], [[5, 4], [8, 4], [8, 6], [5, 6]]]
    shapes = [{"label": "a", "points": p, "shape_type": "polygon", "group_id": 3} for p in squares]
    shapes.append(
        {"label": "a", "points": [[1, 1], [3, 3]], "shape_type": "rectangle", "group_id": None}
    )
    (tmp_path / "x.json").write_text(
        json.dumps({"shapes": shapes, "imagePath": "x.png", "imageWidth": 10, "imageHeight": 8})
    )
    image = read_annotations(tmp_path).images[0]
    assert image.boxes.tolist() == [[0, 0, 8, 6], [1, 1, 3, 3]]  # the group spans both squares
    assert image.masks is None  # the lone rectangle has no mask


def test_labelme_mask_shape_is_pasted_at_its_first_point(tmp_path):
    import base64
    import io

    write_images(tmp_path, {"x.png": (10, 8)})
    crop = np.array([[1, 0, 1], [1, 1, 1]], dtype=bool)  # 2 rows x 3 columns
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, format="png")
    shape = {
        "label": "a",
        "points": [[4, 5], [6, 6]],
        "shape_type": "mask",
        "group_id": None,
        "mask": base64.b64encode(buffer.getvalue()).decode(),
    }
    (tmp_path / "x.json").write_text(
        json.dumps({"shapes": [shape], "imagePath": "x.png", "imageWidth": 10, "imageHeight": 8})
    )
    image = read_annotations(tmp_path).images[0]
    expected = torch.zeros(8, 10, dtype=torch.bool)
    expected[5:7, 4:7] = torch.from_numpy(crop)
    assert torch.equal(image.masks[0], expected)
    assert image.boxes.tolist() == [[4, 5, 7, 7]]


def test_conversion_chain_through_all_five_formats_returns_the_same_boxes(tmp_path):
    original = sample(tmp_path / "src")
    current = original
    for fmt in ("coco", "voc", "yolo", "via", "labelme", "coco"):
        current = by_name(
            read_annotations(write_dataset(current, tmp_path / f"{fmt}-{id(current)}", fmt))
        )
    assert_same_boxes(current, by_name(sample(tmp_path / "src2")))


# ---- Each format's conventions, by hand ------------------------------------------------------------


def one_box(root: Path, box: list[float], size: tuple[int, int] = (40, 20)) -> Annotations:
    write_images(root, {"x.png": size})
    return Annotations(["thing"], [AnnotatedImage("x.png", *size, [box], [0])], None, root)


def test_voc_writes_one_based_inclusive_pixel_indices(tmp_path):
    # pixels columns 0..9 and rows 0..4 are covered: x1 = 0, x2 = 10 → xmin = 1, xmax = 10
    out = write_dataset(one_box(tmp_path / "src", [0, 0, 10, 5]), tmp_path / "voc", "voc")
    bndbox = ET.parse(out / "Annotations" / "x.xml").getroot().find("object/bndbox")
    assert [bndbox.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")] == ["1", "1", "10", "5"]


def test_coco_writes_bbox_as_x_y_width_height(tmp_path):
    out = write_dataset(one_box(tmp_path / "src", [2, 3, 12, 8]), tmp_path / "coco", "coco")
    annotation = json.loads((out / "annotations.json").read_text())["annotations"][0]
    assert annotation["bbox"] == [2, 3, 10, 5]
    assert annotation["area"] == 50


def test_yolo_writes_class_center_and_size_normalized_by_the_image(tmp_path):
    # 40 x 20 image, box (4, 2, 12, 10): centre (8, 6) → (0.2, 0.3); size 8 x 8 → (0.2, 0.4)
    out = write_dataset(one_box(tmp_path / "src", [4, 2, 12, 10]), tmp_path / "yolo", "yolo")
    assert (out / "labels" / "x.txt").read_text() == "0 0.2 0.3 0.2 0.4\n"
    import yaml

    spec = yaml.safe_load((out / "data.yaml").read_text())
    assert spec["names"] == {0: "thing"} and spec["train"] == "images"


def test_via_and_labelme_write_rectangles(tmp_path):
    src = one_box(tmp_path / "src", [4, 2, 12, 10])
    via = json.loads((write_dataset(src, tmp_path / "via", "via") / "via_project.json").read_text())
    (image,) = via["_via_img_metadata"].values()
    assert image["regions"][0] == {
        "shape_attributes": {"name": "rect", "x": 4, "y": 2, "width": 8, "height": 8},
        "region_attributes": {"class": "thing"},
    }
    labelme = json.loads(
        (write_dataset(src, tmp_path / "lm", "labelme") / "labelme" / "x.json").read_text()
    )
    assert labelme["shapes"][0]["points"] == [[4, 2], [12, 10]]
    assert labelme["imagePath"] == "../images/x.png"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools 2.0.x under NumPy 2
def test_pycocotools_loads_the_coco_output_and_its_masks_equal_ours(tmp_path):
    from pycocotools.coco import COCO

    original = sample(tmp_path / "src")
    out = write_dataset(original, tmp_path / "coco", "coco")
    coco = COCO(str(out / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [
        "cat",
        "dog",
        "bird",
    ]  # ids 4, 9, 2: the file's order
    annotation_ids = coco.getAnnIds(imgIds=[17])
    masks = np.stack([coco.annToMask(a) for a in coco.loadAnns(annotation_ids)])
    assert np.array_equal(masks.astype(bool), original.images[0].masks.numpy())
    assert coco.loadImgs([3])[0]["file_name"] == "b.png"


def test_coco_polygons_are_rasterized_as_pycocotools_does(tmp_path):
    # the square (1, 1)-(4, 3) covers the pixels whose centres lie inside: columns 1-3, rows 1-2
    write_images(tmp_path / "images", {"x.png": (5, 4)})
    data = {
        "images": [{"id": 1, "file_name": "x.png", "width": 5, "height": 4}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1, 1, 3, 2],
                "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]],
            },
        ],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    mask = read_annotations(tmp_path).images[0].masks[0]
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[1:3, 1:4] = True
    assert torch.equal(mask, expected)


def test_a_coco_polygon_outside_the_image_is_an_error_naming_the_point(tmp_path):
    # pycocotools would clip the vertex (6, 3) to the 5 x 4 image without a word; the bbox is fine
    write_images(tmp_path / "images", {"x.png": (5, 4)})
    polygons = [[1, 1, 4, 1, 4, 3], [1, 1, 6, 3, 1, 3]]
    data = {
        "images": [{"id": 1, "file_name": "x.png", "width": 5, "height": 4}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 2],
             "segmentation": polygons},
        ],
    }  # fmt: skip
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(
        AnnotationError,
        match=r"annotations.json: annotations\[0\] \(id 7\): field 'segmentation\[1\]': polygon "
        r"point 1 \(6, 3\) lies outside the image, expected 0 <= x <= 5 and 0 <= y <= 4",
    ):
        read_annotations(tmp_path)
    polygons[1][2] = 5.004  # the rounding of 2-decimal files (EDGE_TOLERANCE) passes
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    assert read_annotations(tmp_path).images[0].masks.shape == (1, 4, 5)


def test_coco_uncompressed_rle_is_read(tmp_path):
    # column-major run lengths of a 3 x 2 mask: 1 off, 3 on, 2 off → pixels (1,0), (2,0), (0,1)
    write_images(tmp_path / "images", {"x.png": (2, 3)})
    data = {
        "images": [{"id": 1, "file_name": "x.png", "width": 2, "height": 3}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 2, 3],
                "iscrowd": 1,
                "segmentation": {"size": [3, 2], "counts": [1, 3, 2]},
            },
        ],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    image = read_annotations(tmp_path).images[0]
    assert image.masks[0].tolist() == [[False, True], [True, False], [True, False]]
    assert image.iscrowd.tolist() == [True]


LABELIMG_XML = """<annotation>
    <folder>pics</folder>
    <filename>x.png</filename>
    <path>/home/someone/pics/x.png</path>
    <source><database>Unknown</database></source>
    <size><width>40</width><height>20</height><depth>3</depth></size>
    <segmented>0</segmented>
    <object>
        <name>dog</name><pose>Unspecified</pose><truncated>1</truncated><difficult>0</difficult>
        <bndbox><xmin>5</xmin><ymin>3</ymin><xmax>12</xmax><ymax>10</ymax></bndbox>
    </object>
    <object>
        <name>cat</name><pose>Unspecified</pose><truncated>0</truncated><difficult>1</difficult>
        <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>40</xmax><ymax>20</ymax></bndbox>
    </object>
</annotation>"""


def test_reads_a_labelimg_xml_file_beside_its_image(tmp_path):
    write_images(tmp_path, {"x.png": (40, 20)})
    (tmp_path / "x.xml").write_text(LABELIMG_XML)
    annotations = read_annotations(tmp_path)
    image = annotations.images[0]
    assert annotations.classes == ["cat", "dog"]  # no classes.txt: sorted names
    assert image.boxes.tolist() == [[4, 2, 12, 10], [0, 0, 40, 20]]
    assert image.labels.tolist() == [1, 0]
    assert image.truncated.tolist() == [True, False] and image.difficult.tolist() == [False, True]


def test_reads_a_via_export_with_rect_and_polygon_regions(tmp_path):
    write_images(tmp_path / "images", {"x.png": (40, 20)})
    export = {
        "x.png1234": {
            "filename": "x.png",
            "size": 1234,
            "file_attributes": {},
            "regions": [
                {
                    "shape_attributes": {"name": "rect", "x": 4, "y": 2, "width": 8, "height": 8},
                    "region_attributes": {"kind": "sock"},
                },
                {
                    "shape_attributes": {
                        "name": "polygon",
                        "all_points_x": [1, 4, 4, 1],
                        "all_points_y": [1, 1, 3, 3],
                    },
                    "region_attributes": {"kind": "shoe"},
                },
            ],
        }
    }
    (tmp_path / "via_export_json.json").write_text(json.dumps(export))
    annotations = read_annotations(tmp_path / "via_export_json.json")
    assert annotations.classes == ["shoe", "sock"]
    assert annotations.images[0].boxes.tolist() == [[4, 2, 12, 10], [1, 1, 4, 3]]
    assert annotations.images[0].labels.tolist() == [1, 0]
    assert annotations.images[0].masks is None  # a rect has no mask, so the image has none


def test_reads_labelme_polygons_as_boxes_and_masks(tmp_path):
    write_images(tmp_path, {"x.png": (5, 4)})
    shape = {
        "label": "thing",
        "points": [[1, 1], [4, 1], [4, 3], [1, 3]],
        "shape_type": "polygon",
        "group_id": None,
        "flags": {},
    }
    labelme = {
        "version": "5.4.1",
        "flags": {},
        "shapes": [shape],
        "imagePath": "x.png",
        "imageData": None,
        "imageHeight": 4,
        "imageWidth": 5,
    }
    (tmp_path / "x.json").write_text(json.dumps(labelme))
    image = read_annotations(tmp_path).images[0]
    assert image.boxes.tolist() == [[1, 1, 4, 3]]
    assert image.masks[0].sum() == 6  # columns 1-3 x rows 1-2, as pycocotools rasterizes


def test_yolo_reads_names_as_a_list_and_image_sizes_from_the_headers(tmp_path):
    write_images(tmp_path / "images", {"x.png": (40, 20)})
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.txt").write_text("1 0.2 0.3 0.2 0.4\n")
    (tmp_path / "data.yaml").write_text("train: images\nval: images\nnames: [cat, dog]\n")
    annotations = read_annotations(tmp_path)
    assert annotations.classes == ["cat", "dog"]
    assert (annotations.images[0].width, annotations.images[0].height) == (40, 20)
    assert annotations.images[0].boxes.tolist() == [[4, 2, 12, 10]]


def test_yolo_reads_split_folders_listed_in_data_yaml(tmp_path):
    # Ultralytics: images/train/x.png is labelled by labels/train/x.txt
    write_images(tmp_path / "images" / "train", {"x.png": (40, 20)})
    write_images(tmp_path / "images" / "val", {"y.png": (20, 20)})
    for split, line in (("train", "0 0.5 0.5 0.5 0.5\n"), ("val", "0 0.25 0.25 0.5 0.5\n")):
        (tmp_path / "labels" / split).mkdir(parents=True)
        (tmp_path / "labels" / split / ("x.txt" if split == "train" else "y.txt")).write_text(line)
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/val\nnames: {0: cat}\n")
    annotations = read_annotations(tmp_path / "data.yaml")
    assert [i.file_name for i in annotations.images] == ["train/x.png", "val/y.png"]
    assert [i.boxes.tolist() for i in annotations.images] == [[[10, 5, 30, 15]], [[0, 0, 10, 10]]]
    assert annotations.image_path(1) == tmp_path / "images" / "val" / "y.png"


# ---- Malformed files ------------------------------------------------------------------------------


def coco_file(tmp_path: Path, **changes) -> Path:
    """A valid one-image COCO file (40 x 30) with ``changes`` applied to its first annotation."""
    write_images(tmp_path / "images", {"x.png": (40, 30)})
    annotation = {"id": 7, "image_id": 1, "category_id": 3, "bbox": [2, 2, 10, 10]}
    annotation.update(changes)
    data = {
        "images": [{"id": 1, "file_name": "x.png", "width": 40, "height": 30}],
        "categories": [{"id": 3, "name": "thing"}],
        "annotations": [{k: v for k, v in annotation.items() if v is not None}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    return tmp_path / "annotations.json"


def test_a_missing_field_names_file_record_and_field(tmp_path):
    path = coco_file(tmp_path, bbox=None)
    with pytest.raises(AnnotationError) as error:
        read_annotations(path)
    assert str(error.value) == f"{path}: annotations[0] (id 7): field 'bbox': missing"


def test_a_box_outside_the_image_is_an_error(tmp_path):
    path = coco_file(tmp_path, bbox=[35, 2, 10, 10])  # x2 = 45 > width 40
    with pytest.raises(
        AnnotationError,
        match=r"field 'bbox': box \[35, 2, 45, 12\] .* lies outside the image, expected 0 <= x1 < x2 <= 40",
    ):
        read_annotations(path)


def test_a_voc_box_with_xmax_before_xmin_is_an_error(tmp_path):
    write_images(tmp_path, {"x.png": (40, 20)})
    (tmp_path / "x.xml").write_text(LABELIMG_XML.replace("<xmax>12</xmax>", "<xmax>3</xmax>"))
    with pytest.raises(AnnotationError) as error:
        read_annotations(tmp_path)
    assert str(error.value).startswith(
        f"{tmp_path / 'x.xml'}: object 0: field 'bndbox': box [4, 2, 3, 10]"
    )
    assert "expected x2 > x1 and y2 > y1" in str(error.value)


def test_an_unknown_coco_category_is_an_error(tmp_path):
    path = coco_file(tmp_path, category_id=99)
    with pytest.raises(
        AnnotationError,
        match=r"annotations\[0\] \(id 7\): field 'category_id': unknown class 99, expected one of \[3\]",
    ):
        read_annotations(path)


def test_a_voc_name_outside_classes_txt_is_an_error(tmp_path):
    write_images(tmp_path, {"x.png": (40, 20)})
    (tmp_path / "x.xml").write_text(LABELIMG_XML)
    (tmp_path / "classes.txt").write_text("cat\nbird\n")
    with pytest.raises(
        AnnotationError,
        match=r"object 0: field 'name': unknown class 'dog', expected one of \['cat', 'bird'\]",
    ):
        read_annotations(tmp_path)


def test_a_yolo_class_beyond_the_names_is_an_error(tmp_path):
    write_images(tmp_path / "images", {"x.png": (40, 20)})
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.txt").write_text("0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    with pytest.raises(AnnotationError) as error:
        read_annotations(tmp_path)
    assert str(error.value).startswith(
        f"{tmp_path / 'labels' / 'x.txt'}: line 2: field 'class': unknown class 2, expected 0..1"
    )


def test_a_yolo_box_overshooting_by_its_rounding_is_clipped_to_the_edge(tmp_path):
    # 6 decimals: cx + w/2 = 0.9123455 + 0.175311/2 = 1.0000010 → x2 = 40.00004 px, within 0.01 px
    write_images(tmp_path / "images", {"x.png": (40, 20)})
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.txt").write_text("0 0.9123455 0.5 0.175311 0.2\n")
    (tmp_path / "data.yaml").write_text("names: [cat]\n")
    x2 = read_annotations(tmp_path).images[0].boxes[0, 2]
    assert x2 == 40.0


def test_an_annotation_of_a_missing_image_is_an_error(tmp_path):
    path = coco_file(tmp_path, image_id=2)
    with pytest.raises(
        AnnotationError, match=r"field 'image_id': image 2 is missing from 'images'"
    ):
        read_annotations(path)


def test_a_missing_image_file_is_an_error(tmp_path):
    path = coco_file(tmp_path)
    (tmp_path / "images" / "x.png").unlink()
    with pytest.raises(
        AnnotationError,
        match=r"images\[0\] \(id 1\): field 'file_name': image file .*x.png not found",
    ):
        read_annotations(path)


def test_a_yolo_label_file_without_its_image_is_an_error(tmp_path):
    write_images(tmp_path / "images", {"x.png": (40, 20)})
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "y.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("names: [cat]\n")
    with pytest.raises(
        AnnotationError, match=r"y.txt: file: field '\(image\)': no image with this name"
    ):
        read_annotations(tmp_path)


def test_a_wrong_type_names_what_was_found_and_expected(tmp_path):
    path = coco_file(tmp_path, bbox=[2, "2", 10, 10])
    with pytest.raises(AnnotationError) as error:
        read_annotations(path)
    assert (
        str(error.value)
        == f"{path}: annotations[0] (id 7): field 'bbox': found '2' (str), expected a number"
    )


def test_labelme_with_a_string_width_is_an_error(tmp_path):
    write_images(tmp_path, {"x.png": (5, 4)})
    (tmp_path / "x.json").write_text(
        json.dumps({"shapes": [], "imagePath": "x.png", "imageWidth": "5", "imageHeight": 4})
    )
    with pytest.raises(
        AnnotationError,
        match=r"x.json: top level: field 'imageWidth': found '5' \(str\), expected int",
    ):
        read_annotations(tmp_path, "labelme")


def test_invalid_json_names_the_line(tmp_path):
    (tmp_path / "annotations.json").write_text('{"images": [\n  oops]}')
    with pytest.raises(
        AnnotationError, match=r"annotations.json: line 2: field '\(file\)': not valid JSON"
    ):
        read_annotations(tmp_path / "annotations.json", "coco")


def test_skip_invalid_leaves_out_bad_records_and_lists_them(tmp_path):
    write_images(tmp_path / "images", {"x.png": (40, 30)})
    good = {"image_id": 1, "category_id": 3, "bbox": [2, 2, 10, 10]}
    data = {
        "images": [
            {"id": 1, "file_name": "x.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "gone.png", "width": 40, "height": 30},
        ],
        "categories": [{"id": 3, "name": "thing"}],
        "annotations": [
            {"id": 1, **good},
            {"id": 2, **good, "bbox": [30, 2, 20, 5]},
            {"id": 3, **good, "category_id": 8},
            {"id": 4, **good, "image_id": 2},
            {"id": 5, **good},
        ],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    annotations = read_annotations(tmp_path, skip_invalid=True)
    assert [i.file_name for i in annotations.images] == ["x.png"]
    assert len(annotations.images[0]) == 2  # annotations 1 and 5
    assert len(annotations.warnings) == 4  # gone.png, and annotations 2, 3, 4
    assert "images[1] (id 2): field 'file_name'" in annotations.warnings[0]
    assert "annotations[3] (id 4): field 'image_id'" in annotations.warnings[3]


# ---- Writing: nothing half-written ------------------------------------------------------------------


def test_write_annotations_validates_everything_before_writing_anything(tmp_path):
    annotations = sample(tmp_path / "src")
    annotations.images[2].boxes = torch.tensor([[0.0, 0.0, 17.0, 4.0]])  # wider than 16
    annotations.images[2].labels = torch.tensor([0])
    (tmp_path / "out").mkdir()
    with pytest.raises(AnnotationError, match=r"images\[2\] \(empty.png\) object 0: field 'boxes'"):
        write_annotations(annotations, tmp_path / "out", "voc")
    assert list((tmp_path / "out").iterdir()) == []  # the files of images 0 and 1 were not written


def test_write_dataset_leaves_no_folder_when_an_image_is_missing(tmp_path):
    annotations = sample(tmp_path / "src")
    (tmp_path / "src" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="b.png"):
        write_dataset(annotations, tmp_path / "out", "coco")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no out, no temporary folder


def test_write_dataset_refuses_a_folder_that_holds_files(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        write_dataset(sample(tmp_path / "src"), tmp_path / "out", "coco")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


# ---- Dataset and batches ----------------------------------------------------------------------------


def test_dataset_yields_tv_tensors_with_the_image_size_as_canvas(tmp_path):
    dataset = AnnotatedDataset(sample(tmp_path / "src"), mode="L")
    image, target = dataset[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
    assert image.shape == (1, 30, 40)
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
    assert target["boxes"].canvas_size == (30, 40)
    assert isinstance(target["masks"], tv_tensors.Mask) and target["masks"].shape == (2, 30, 40)
    assert target["labels"].dtype == torch.int64


def test_dataset_rejects_an_image_whose_size_disagrees_with_its_annotation(tmp_path):
    annotations = sample(tmp_path / "src")
    annotations.images[1].height, annotations.images[1].width = 50, 26
    annotations.images[1].masks = None
    with pytest.raises(AnnotationError, match="the image is 25x50, the annotations say 26x50"):
        AnnotatedDataset(annotations)[1]


def test_collate_detection_stacks_images_and_keeps_targets_per_image():
    images = [torch.zeros(3, 8, 8, dtype=torch.uint8), torch.ones(3, 8, 8, dtype=torch.uint8)]
    targets = [{"labels": torch.tensor([1])}, {"labels": torch.tensor([0, 2])}]
    batch, kept = collate_detection(list(zip(images, targets, strict=True)))
    assert batch.shape == (2, 3, 8, 8) and batch[1].eq(1).all()
    assert kept is not targets and [t["labels"].tolist() for t in kept] == [[1], [0, 2]]
    with pytest.raises(ValueError, match="different shapes"):
        collate_detection([(images[0], targets[0]), (torch.zeros(3, 4, 8), targets[1])])


# ---- Drawing and the command line -------------------------------------------------------------------


def test_drawn_box_covers_exactly_its_pixels():
    from cnnkit.viz.annotations import PALETTE, draw_annotations

    # box (2, 2, 6, 6) covers pixel columns 2..5: its outline is on columns 2 and 5, not 6
    drawn = draw_annotations(
        torch.zeros(1, 10, 10, dtype=torch.uint8),
        torch.tensor([[2.0, 2, 6, 6]]),
        torch.tensor([0]),
        scale=1,
    )
    colour = torch.tensor(PALETTE[0], dtype=torch.uint8)
    assert drawn.shape == (3, 10, 10)
    assert torch.equal(drawn[:, 3, 2], colour) and torch.equal(drawn[:, 3, 5], colour)
    assert drawn[:, 3, 6].eq(0).all() and drawn[:, 3, 3].eq(0).all()


def data_cli(argv: list[str]) -> int:
    from cnnkit.cli import build_parser

    parser = build_parser(["data"])
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def test_cli_convert_writes_the_dataset_in_the_new_format(tmp_path, capsys):
    write_dataset(sample(tmp_path / "src"), tmp_path / "coco", "coco")
    assert (
        data_cli(
            ["convert", str(tmp_path / "coco"), "--to", "yolo", "--out", str(tmp_path / "yolo")]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    assert_same_boxes(read_annotations(tmp_path / "yolo"), by_name(sample(tmp_path / "src2")))


def test_cli_show_draws_a_preview_and_lists_skipped_records(tmp_path, capsys):
    path = coco_file(tmp_path, category_id=99)
    assert data_cli(["show", str(path), "--skip-invalid", "--out", str(tmp_path / "p.png")]) == 0
    output = capsys.readouterr().out
    assert "warning:" in output and "1 invalid record(s) skipped" in output
    assert Image.open(tmp_path / "p.png").size[0] > 0
