"""Segmentation data from annotation files (``cnnkit.data.segmentation``): objects with polygons,
RLE or masks become label maps (background 0, class k → k + 1, the smaller object on top, crowds
255), the scenes come back as the generator's semantic masks, bad input names the file, the record
and the field, ``--skip-invalid`` leaves bad records out, and ``cnnkit data make-scenes --format
coco`` → ``cnnkit train --task segment`` → ``cnnkit evaluate`` works end to end.

Expected maps are drawn by hand; polygons are rasterized as pycocotools does (a pixel is inside
when its centre is), the rule ``cnnkit.data.annotations`` documents."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from cnnkit.cli import main
from cnnkit.data.annotations import write_dataset
from cnnkit.data.datasets import load_data, load_data_from_meta
from cnnkit.data.scenes import make_scenes
from cnnkit.data.segmentation import IGNORE_INDEX, OBJECT_OFFSET, semantic_map
from cnnkit.train import rundir

I = IGNORE_INDEX  # noqa: E741


# ---- painting objects into one map --------------------------------------------------------------
def boxes_mask(*boxes: tuple[int, int, int, int], size=(5, 6)) -> torch.Tensor:
    """bool (M, H, W): mask j covers rows y1:y2 and columns x1:x2 of box j = (x1, y1, x2, y2)."""
    masks = torch.zeros(len(boxes), *size, dtype=torch.bool)
    for j, (x1, y1, x2, y2) in enumerate(boxes):
        masks[j, y1:y2, x1:x2] = True
    return masks


def test_the_smaller_object_is_painted_over_the_larger_whatever_the_file_order():
    # the small object (class 0) is listed first: painted in file order the large one would hide it
    masks = boxes_mask((1, 1, 3, 3), (0, 0, 6, 4))
    labels = torch.tensor([0, 1])
    expected = [
        [2, 2, 2, 2, 2, 2],
        [2, 1, 1, 2, 2, 2],
        [2, 1, 1, 2, 2, 2],
        [2, 2, 2, 2, 2, 2],
        [0, 0, 0, 0, 0, 0],
    ]
    assert semantic_map(masks, labels).tolist() == expected
    assert semantic_map(masks.flip(0), labels.flip(0)).tolist() == expected
    assert OBJECT_OFFSET == 1  # the scenes' convention: class k is label k + 1


def test_objects_of_equal_area_are_painted_in_file_order_the_later_on_top():
    masks = boxes_mask((0, 0, 3, 2), (1, 1, 4, 3))  # 6 pixels each, overlapping at (1..2, 1)
    top = semantic_map(masks, torch.tensor([4, 7]))
    assert top[1].tolist() == [5, 8, 8, 8, 0, 0]
    assert semantic_map(masks.flip(0), torch.tensor([7, 4]))[1].tolist() == [5, 5, 5, 8, 0, 0]


def test_crowd_regions_are_ignored_under_the_objects_annotated_one_by_one():
    masks = boxes_mask((0, 0, 4, 4), (2, 2, 6, 5))  # a person, and a crowd of people around
    labels, crowd = torch.tensor([0, 0]), torch.tensor([False, True])
    assert semantic_map(masks, labels, crowd).tolist() == [
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, I, I],
        [1, 1, 1, 1, I, I],
        [0, 0, I, I, I, I],
    ]
    empty = semantic_map(torch.zeros(0, 5, 6, dtype=torch.bool), torch.zeros(0))
    assert empty.dtype == torch.uint8 and empty.shape == (5, 6) and not empty.any()


# ---- COCO files ---------------------------------------------------------------------------------
def rle(mask: np.ndarray, compressed: bool = True) -> dict:
    """A mask as COCO RLE: compressed (pycocotools' encoding) or as uncompressed column-major runs."""
    if compressed:
        encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}
    flat, counts, value, run = mask.flatten(order="F"), [], 0, 0
    for pixel in flat:
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    return {"size": list(mask.shape), "counts": [*counts, run]}


def write_coco(root: Path) -> dict:
    """Two 6 x 5 images: a.png with a small cat (compressed RLE, listed first), a large dog
    (polygon) and a crowd of dogs (uncompressed RLE); b.png with no object. Category ids 4 and 9,
    so classes ('dog', 'cat') and the labels dog = 1, cat = 2 in the maps."""
    (root / "images").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.fromarray(PIXELS).save(root / "images" / name)
    cat = np.zeros((5, 6), bool)
    cat[1:3, 1:3] = True
    crowd = np.zeros((5, 6), bool)
    crowd[2:5, 4:6] = True
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 6, "height": 5},
            {"id": 2, "file_name": "b.png", "width": 6, "height": 5},
        ],
        "categories": [{"id": 4, "name": "dog"}, {"id": 9, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2],
             "segmentation": rle(cat)},
            {"id": 2, "image_id": 1, "category_id": 4, "bbox": [0, 0, 6, 4],
             "segmentation": [[0, 0, 6, 0, 6, 4, 0, 4]]},
            {"id": 3, "image_id": 1, "category_id": 4, "bbox": [4, 2, 2, 3], "iscrowd": 1,
             "segmentation": rle(crowd, compressed=False)},
        ],
    }  # fmt: skip
    save_coco(root, data)
    return data


PIXELS = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8  # not constant: a std to normalize by


def save_coco(root: Path, data: dict) -> Path:
    (root / "annotations.json").write_text(json.dumps(data))
    return root / "annotations.json"


COCO_MAP_A = [
    [1, 1, 1, 1, 1, 1],
    [1, 2, 2, 1, 1, 1],
    [1, 2, 2, 1, 1, 1],
    [1, 1, 1, 1, 1, 1],
    [0, 0, 0, 0, I, I],
]


def test_coco_polygons_and_rle_become_label_maps_with_the_background_first(tmp_path):
    write_coco(tmp_path / "set")
    data = load_data(tmp_path / "set" / "annotations.json", task="segment", fractions=(1, 0, 0))
    assert data.class_names == ("background", "dog", "cat")
    images, maps = data.train
    assert maps.dtype == torch.uint8 and maps[0].tolist() == COCO_MAP_A
    assert not maps[1].any()  # an image without objects is all background
    assert images.shape == (2, 3, 5, 6) and (images == torch.from_numpy(PIXELS)).all()  # as RGB
    assert data.meta.source["format"] == "segmentation-annotations"
    assert data.meta.source["annotations"] == "coco"
    assert data.warnings == ()


def test_via_polygons_take_the_same_path(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "images" / "x.png")
    square = {"name": "polygon", "all_points_x": [1, 4, 4, 1], "all_points_y": [1, 1, 3, 3]}
    export = {"x.png-1": {"filename": "x.png", "size": -1, "file_attributes": {},
                          "regions": [{"shape_attributes": square,
                                       "region_attributes": {"class": "thing"}}]}}  # fmt: skip
    (tmp_path / "via_project.json").write_text(json.dumps(export))
    data = load_data(tmp_path, task="segment", fractions=(1, 0, 0))
    # the square (1, 1)-(4, 3) holds the pixel centres of columns 1-3, rows 1-2
    assert data.class_names == ("background", "thing")
    assert data.train[1][0].tolist() == [[0] * 5, [0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [0] * 5]


@pytest.mark.parametrize("fmt", ["coco", "labelme"])
def test_scenes_written_as_annotations_read_back_as_their_semantic_masks(
    fmt, tmp_path, fashion_mnist
):
    scenes = make_scenes(8, "test", 5, canvas=32, max_objects=4, data=fashion_mnist[2])
    out = write_dataset(
        scenes.to_annotations(), tmp_path / fmt, fmt, write_images=scenes.save_images
    )
    data = load_data(out, task="segment", channels=1, fractions=(1, 0, 0))
    images, maps = data.train
    assert torch.equal(maps, scenes.semantic)  # exactly, pixel for pixel
    assert torch.equal(images, scenes.images)
    assert data.class_names[1:] == scenes.classes and data.class_names[0] == "background"


# ---- bad input ----------------------------------------------------------------------------------
def drop_outline(data, root):
    data["annotations"][1]["segmentation"] = []


def unknown_category(data, root):
    data["annotations"][0]["category_id"] = 5


def polygon_outside(data, root):
    data["annotations"][1]["segmentation"] = [[0, 0, 6, 0, 6, 4, 0, 7.5]]


def image_size_differs(data, root):  # the records (and their RLE) say 6 x 5
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(root / "images" / "a.png")


BAD_COCO = {
    "an object with a box and no outline": (
        drop_outline,
        r"annotations.json: image a.png \(id 1\): field 'segmentation': an object has a box but "
        r"no outline",
    ),
    "an unknown category": (
        unknown_category,
        r"annotations.json: annotations\[0\] \(id 1\): field 'category_id': unknown class 5, "
        r"expected one of \[4, 9\]",
    ),
    "a polygon outside the image": (
        polygon_outside,
        r"annotations.json: annotations\[1\] \(id 2\): field 'segmentation\[0\]': polygon point 3 "
        r"\(0, 7.5\) lies outside the image",
    ),
    "masks of another size than the image": (
        image_size_differs,
        r"annotations.json: image a.png \(id 1\): field 'width/height': the image .*a.png is 7x5 "
        r"\(WxH\); the annotations, and so the masks, are 6x5",
    ),
}


@pytest.mark.parametrize("case", BAD_COCO)
def test_bad_coco_input_names_the_file_the_record_and_the_field(case, tmp_path):
    mutate, message = BAD_COCO[case]
    data = write_coco(tmp_path)
    mutate(data, tmp_path)
    with pytest.raises(ValueError, match=message):
        load_data(save_coco(tmp_path, data), task="segment")


def test_boxes_only_formats_and_unknown_files_are_refused(tmp_path):
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    (tmp_path / "voc" / "Annotations" / "x.xml").write_text("<annotation/>")
    with pytest.raises(ValueError, match=r"voc: voc annotations hold boxes only"):
        load_data(tmp_path / "voc", task="segment")
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match=r"other: neither a segmentation folder nor annotations"):
        load_data(tmp_path / "other", task="segment")


def test_skip_invalid_leaves_the_bad_records_out_and_evaluate_reloads_the_same(tmp_path):
    data = write_coco(tmp_path)
    unknown_category(data, None)  # the cat is left out: the dog is painted where it was
    data["images"][1]["height"] = 4  # b.png is 6 x 5: the whole image is left out
    path = save_coco(tmp_path, data)
    loaded = load_data(path, task="segment", fractions=(1, 0, 0), skip_invalid=True)
    expected = copy.deepcopy(COCO_MAP_A)
    expected[1][1:3] = expected[2][1:3] = [1, 1]
    assert loaded.train[1].tolist() == [expected]
    assert [w.split(": field ")[1][:14] for w in loaded.warnings] == [
        "'category_id':",
        "'width/height'",
    ]
    assert loaded.meta.source["skip_invalid"] is True
    again = load_data_from_meta(loaded.meta)
    assert torch.equal(again.train[1], loaded.train[1]) and len(again.warnings) == 2


def test_skip_invalid_works_the_same_for_detection_and_only_for_annotation_files(tmp_path):
    data = write_coco(tmp_path)
    unknown_category(data, None)
    loaded = load_data(
        save_coco(tmp_path, data), task="detect", fractions=(1, 0, 0), skip_invalid=True
    )
    labels = sorted(len(t["labels"]) for t in loaded.train[1])
    assert labels == [0, 2] and loaded.meta.source["skip_invalid"] is True  # the dog and the crowd
    assert "field 'category_id'" in loaded.warnings[0]
    with pytest.raises(ValueError, match=r"--skip-invalid: .*--data 'scenes' with --task segment"):
        load_data("scenes", task="segment", skip_invalid=True)


# ---- the command line ---------------------------------------------------------------------------
def test_make_scenes_as_coco_trains_and_evaluates_a_segment_run(tmp_path, capsys, fashion_mnist):
    scenes_dir, out = tmp_path / "scenes", tmp_path / "run"
    assert main(["data", "make-scenes", "--out", str(scenes_dir), "--n", "12", "--canvas", "32",
                 "--max-objects", "3", "--format", "coco", "--preview", "0"]) == 0  # fmt: skip
    coco = scenes_dir / "annotations.json"
    # the label maps are the generator's semantic masks (its default data: the training split)
    expected = make_scenes(12, "train", 0, canvas=32, max_objects=3, data=fashion_mnist[0])
    assert torch.equal(
        load_data(coco, task="segment", fractions=(1, 0, 0)).train[1], expected.semantic
    )
    code = main(
        ["train", "--task", "segment", "--model", "unet", "--data", str(coco),
         "--model-option", "base_width=4", "--model-option", "depth=2", "--epochs", "1",
         "--batch-size", "4", "--device", "cpu", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    config = json.loads((out / rundir.CONFIG).read_text())
    assert (
        config["data"]["class_names"][0] == "background"
        and len(config["data"]["class_names"]) == 11
    )
    assert config["data"]["source"]["counts"] == {"train": 9, "valid": 2, "test": 1}
    test = json.loads((out / rundir.TEST_METRICS).read_text())
    capsys.readouterr()
    assert main(["evaluate", str(out), "--device", "cpu"]) == 0
    assert f"mean IoU        {test['test_mean_iou']:.4f}" in capsys.readouterr().out  # same split


def test_train_skip_invalid_lists_what_it_left_out(tmp_path, capsys):
    data = write_coco(tmp_path / "set")
    unknown_category(data, None)
    path = save_coco(tmp_path / "set", data)
    args = ["train", "--task", "segment", "--model", "unet", "--data", str(path),
            "--model-option", "base_width=2", "--model-option", "depth=1", "--epochs", "1",
            "--batch-size", "2", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    assert "field 'category_id': unknown class 5" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "run"), "--skip-invalid"]) == 0
    printed = capsys.readouterr().out
    assert "warning: " in printed and "1 invalid record(s) skipped" in printed


def test_resuming_without_skip_invalid_is_refused_naming_the_option():
    from cnnkit.cli import CLIError
    from cnnkit.cli._common import compare_resume_config

    run = {"data": {"source": {"format": "segmentation-annotations", "skip_invalid": True}}}
    now = {"data": {"source": {"format": "segmentation-annotations"}}}
    with pytest.raises(CLIError, match=r"--skip-invalid \(data.source.skip_invalid absent now"):
        compare_resume_config(run, now, "config.json")
