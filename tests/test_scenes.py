"""cnnkit.data.scenes: Fashion-MNIST scenes with exact boxes and masks (issue 11).

References: ``torchvision.ops.masks_to_boxes`` (inclusive pixel indices, so the continuous box is
its x2, y2 + 1) for the tightness of boxes; the book's Fashion-MNIST split (55,000 / 5,000 / 10,000,
``load_fashion_mnist``) for where items come from; ``transforms.v2.RandomHorizontalFlip`` for
moving boxes and masks with the image (x1' = W - x2, x2' = W - x1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2

from cnnkit.data.annotations import AnnotatedDataset, read_annotations
from cnnkit.data.scenes import make_scenes

SPLIT_INDEX = {"train": 0, "valid": 1, "test": 2}


@pytest.fixture(scope="module")
def scenes(fashion_mnist):
    """Crowded scenes (up to 6 items, heavy overlap allowed so occlusion drops items)."""
    return make_scenes(40, "train", 3, data=fashion_mnist[0], max_iou=0.9, background="mixed")


def test_boxes_tightly_bound_the_visible_mask_pixels(scenes):
    for i in range(len(scenes)):
        expected = masks_to_boxes(scenes.masks(i)) + torch.tensor([0, 0, 1, 1])
        assert torch.equal(scenes.boxes[i], expected), i


def test_instance_masks_never_claim_the_same_pixel_and_none_is_empty(scenes):
    for i in range(len(scenes)):
        masks = scenes.masks(i)
        assert masks.sum(0).max() <= 1
        assert masks.flatten(1).any(1).all()


def test_semantic_mask_is_class_plus_one_on_each_instance_and_zero_elsewhere(scenes):
    for i in range(len(scenes)):
        expected = torch.zeros_like(scenes.semantic[i])
        for mask, label in zip(scenes.masks(i), scenes.labels[i], strict=True):
            expected[mask] = label + 1
        assert torch.equal(scenes.semantic[i], expected)


def test_every_item_pixel_on_a_plain_background_belongs_to_a_box(fashion_mnist):
    # items left too occluded are dropped and the scene drawn again: outside the instance masks
    # there is only the one grey level of the plain background
    crowded = make_scenes(30, "train", 5, data=fashion_mnist[0], max_iou=0.95, min_visible=0.9)
    for i in range(len(crowded)):
        background = crowded.images[i, 0][crowded.instances[i] == 0]
        assert background.unique().numel() == 1, i


def test_items_come_from_the_named_split(fashion_mnist):
    # at scale 1 an item is pasted pixel for pixel: the scene shows the source image's pixels
    # (make_scenes loads the split itself here: that choice is what is tested)
    for split, (images, labels) in zip(SPLIT_INDEX, fashion_mnist, strict=True):
        one = make_scenes(12, split, 0, max_objects=1, scale=(1.0, 1.0))
        for i in range(len(one)):
            (source,) = one.sources[i].tolist()
            assert one.labels[i].tolist() == [int(labels[source])]
            item = images[source]
            rows = torch.nonzero((item > 16).any(1)).flatten()
            cols = torch.nonzero((item > 16).any(0)).flatten()
            crop = item[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            x1, y1, x2, y2 = one.boxes[i][0].int().tolist()
            mask = one.masks(i)[0, y1:y2, x1:x2]
            assert torch.equal(one.images[i, 0, y1:y2, x1:x2][mask], crop[mask]), (split, i)


def test_train_valid_and_test_scenes_draw_from_disjoint_images(fashion_mnist):
    # the default loader returns the book's split: valid is the last 5,000 training images
    seen = {}
    for split in SPLIT_INDEX:
        drawn = make_scenes(20, split, 0)
        seen[split] = torch.cat(drawn.sources)
    (x_train, _), (x_valid, _), (x_test, _) = fashion_mnist
    assert seen["train"].max() < len(x_train) == 55_000
    assert seen["valid"].max() < len(x_valid) == 5_000
    assert seen["test"].max() < len(x_test) == 10_000
    assert len(drawn.images) == 20


def test_the_same_seed_gives_identical_scenes_and_another_seed_different_ones(fashion_mnist):
    def make(seed):
        return make_scenes(6, "valid", seed, data=fashion_mnist[1], background="mixed")

    first, again, other = make(7), make(7), make(8)
    assert torch.equal(first.images, again.images)
    assert torch.equal(first.instances, again.instances)
    assert all(torch.equal(a, b) for a, b in zip(first.boxes, again.boxes, strict=True))
    assert not torch.equal(first.images, other.images)


def test_max_objects_one_gives_exactly_one_object_per_scene(fashion_mnist):
    single = make_scenes(25, "test", 0, max_objects=1, data=fashion_mnist[2], background="clutter")
    assert [len(labels) for labels in single.labels] == [1] * 25
    assert single.images.shape == (25, 1, 128, 128) and single.images.dtype == torch.uint8


def test_scale_range_gives_small_and_large_boxes(fashion_mnist):
    # items are 28 px scaled 0.75-3x; Fashion-MNIST items fill most of their 28 x 28 square
    single = make_scenes(60, "train", 1, max_objects=1, data=fashion_mnist[0])
    sides = torch.cat(single.boxes)[:, 2:] - torch.cat(single.boxes)[:, :2]
    longest = sides.max(1).values
    assert longest.min() <= 28 and longest.max() >= 60 and longest.max() <= 84


def test_placement_iou_equals_torchvision_box_iou():
    from torchvision.ops import box_iou

    from cnnkit.data.scenes import _box_iou

    box = np.array([10.0, 10, 50, 60])
    others = np.array([[0.0, 0, 30, 30], [40, 40, 90, 90], [60, 60, 70, 70]])
    expected = box_iou(torch.from_numpy(box)[None], torch.from_numpy(others))[0].numpy()
    np.testing.assert_allclose(_box_iou(box, others), expected, rtol=1e-12)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="split 'validation'"):
        make_scenes(1, "validation")
    with pytest.raises(ValueError, match="background 'stars'"):
        make_scenes(1, background="stars")


def test_horizontal_flip_moves_boxes_and_masks_with_the_image(fashion_mnist, tmp_path):
    from cnnkit.data.annotations import write_dataset

    scenes = make_scenes(2, "valid", 2, data=fashion_mnist[1])
    out = write_dataset(
        scenes.to_annotations(), tmp_path / "coco", "coco", write_images=scenes.save_images
    )
    plain = AnnotatedDataset(read_annotations(out), mode="L")
    flipped = AnnotatedDataset(
        read_annotations(out), mode="L", transforms=v2.RandomHorizontalFlip(p=1.0)
    )
    image, target = plain[1]
    image_f, target_f = flipped[1]
    width = image.shape[-1]
    assert torch.equal(image_f, image.flip(-1))
    assert torch.equal(target_f["masks"], target["masks"].flip(-1))
    x1, y1, x2, y2 = target["boxes"].unbind(1)
    assert torch.equal(target_f["boxes"], torch.stack([width - x2, y1, width - x1, y2], 1))
    assert torch.equal(
        target_f["boxes"], masks_to_boxes(target_f["masks"]) + torch.tensor([0, 0, 1, 1])
    )


def test_in_memory_targets_flip_with_the_image_like_the_dataset_ones(fashion_mnist):
    from torchvision import tv_tensors

    scenes = make_scenes(1, "test", 0, data=fashion_mnist[2])
    image, target = v2.RandomHorizontalFlip(p=1.0)(
        tv_tensors.Image(scenes.images[0]), scenes.target(0)
    )
    assert torch.equal(target["masks"], scenes.masks(0).flip(-1))
    assert torch.equal(
        target["boxes"], masks_to_boxes(target["masks"]) + torch.tensor([0, 0, 1, 1])
    )


def test_scenes_written_as_coco_read_back_with_the_same_masks(fashion_mnist, tmp_path):
    from cnnkit.data.annotations import write_dataset

    scenes = make_scenes(3, "train", 4, data=fashion_mnist[0])
    out = write_dataset(
        scenes.to_annotations(), tmp_path / "coco", "coco", write_images=scenes.save_images
    )
    back = read_annotations(out)
    for i, image in enumerate(back.images):
        assert torch.equal(image.masks, scenes.masks(i))
        assert torch.equal(image.boxes, scenes.boxes[i])


def test_cli_make_scenes_writes_images_annotations_and_a_preview(tmp_path, capsys):
    from cnnkit.cli import build_parser

    parser = build_parser(["data"])
    out = tmp_path / "scenes"
    args = parser.parse_args(
        [
            "data",
            "make-scenes",
            "--out",
            str(out),
            "--n",
            "5",
            "--split",
            "test",
            "--format",
            "yolo",
            "--seed",
            "3",
        ]
    )
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}.png" for i in range(5)]
    assert (out / "preview.png").is_file()
    expected = make_scenes(5, "test", 3)
    back = read_annotations(out)
    for i, image in enumerate(back.images):
        assert torch.equal(image.boxes, expected.boxes[i])
        assert torch.equal(image.labels, expected.labels[i])
    assert np.array_equal(
        np.asarray(AnnotatedDataset(back, mode="L")[0][0]), expected.images[0].numpy()
    )
