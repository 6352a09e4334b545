"""Batch augmentation (issue 15): random crop with padding, flip and erasing with per-image
parameters on whole batches. References: a per-image Python loop over the same drawn parameters,
and ``torchvision.transforms.v2.RandomErasing``'s definition of the rectangle."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnkit.data import TensorBatches
from cnnkit.data.augment import (
    ERASE_RATIO,
    ERASE_SCALE,
    BatchAugment,
    draw_erase_boxes,
    draw_mirror,
    draw_offsets,
    erase_rectangles,
    mirror,
    translate,
)


def _batch(n: int = 16, c: int = 2, h: int = 9, w: int = 11, dtype=torch.uint8) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randint(1, 256, (n, c, h, w), generator=g).to(dtype)  # no zero pixel


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_each_crop_is_the_padded_images_window_at_its_drawn_offset(dtype) -> None:
    images, padding = _batch(dtype=dtype), 3
    offsets = draw_offsets(len(images), padding, torch.Generator().manual_seed(0))
    out = translate(images, padding, offsets, fill=7)
    assert out.shape == images.shape and out.dtype == dtype
    padded = F.pad(images, (padding,) * 4, value=7)
    for i, (top, left) in enumerate(offsets.tolist()):  # the per-image reference loop
        assert torch.equal(out[i], padded[i, :, top : top + 9, left : left + 11])
    # the offsets cover the whole range [0, 2·padding], different per image
    assert offsets.min() >= 0 and offsets.max() <= 2 * padding
    assert len({tuple(o) for o in offsets.tolist()}) > 1


def test_a_centred_crop_is_the_identity_and_an_extreme_one_shifts_in_the_fill() -> None:
    images = _batch(n=2)
    centred = translate(images, 2, torch.tensor([[2, 2], [2, 2]]))
    assert torch.equal(centred, images)
    shifted = translate(images, 2, torch.tensor([[0, 0], [4, 4]]))
    # offset (0, 0): the image moved 2 pixels down and right, 2 rows and columns of fill on top/left
    assert torch.equal(shifted[0, :, 2:, 2:], images[0, :, :-2, :-2])
    assert (shifted[0, :, :2] == 0).all() and (shifted[0, :, :, :2] == 0).all()
    assert torch.equal(shifted[1, :, :-2, :-2], images[1, :, 2:, 2:])


def test_flips_mirror_exactly_the_drawn_images() -> None:
    images = _batch(dtype=torch.float32)
    which = draw_mirror(len(images), torch.Generator().manual_seed(1))
    out = mirror(images, which)
    assert 0 < which.sum() < len(images)
    for i in range(len(images)):
        expected = images[i].flip(-1) if which[i] else images[i]
        assert torch.equal(out[i], expected)
    assert torch.equal(out[which][..., 0], images[which][..., -1])  # first column ← last


def test_erasing_touches_only_the_drawn_rectangle() -> None:
    images = _batch(n=64, h=28, w=28)
    boxes = draw_erase_boxes(64, 28, 28, p=0.5, generator=torch.Generator().manual_seed(2))
    out = erase_rectangles(images, boxes, value=0)
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        inside = torch.zeros(28, 28, dtype=torch.bool)
        inside[top : top + h, left : left + w] = True
        assert (out[i][:, inside] == 0).all()
        assert torch.equal(out[i][:, ~inside], images[i][:, ~inside])
        assert (out[i] != images[i]).any(0).sum() == h * w  # the input has no zero pixel


def test_erase_boxes_follow_random_erasings_ranges() -> None:
    n, height, width = 4000, 28, 28
    boxes = draw_erase_boxes(n, height, width, p=0.5, generator=torch.Generator().manual_seed(4))
    top, left, h, w = boxes.T
    erased = h > 0
    # p = 0.5: about half the images (binomial std 0.008); a rectangle always fits at 28x28
    assert abs(erased.float().mean().item() - 0.5) < 0.04
    assert ((h[erased] < height) & (w[erased] < width)).all()
    assert (top + h <= height).all() and (left + w <= width).all() and (top >= 0).all()
    # some real rectangle within the ranges rounds to (h, w): each side is within 1/2 pixel of it
    hh, ww, full = h[erased].float(), w[erased].float(), height * width
    assert ((hh + 0.5) * (ww + 0.5) >= ERASE_SCALE[0] * full).all()
    assert ((hh - 0.5) * (ww - 0.5) <= ERASE_SCALE[1] * full).all()
    assert ((hh + 0.5) / (ww - 0.5) >= ERASE_RATIO[0]).all()
    assert ((hh - 0.5) / (ww + 0.5) <= ERASE_RATIO[1]).all()
    assert (h[~erased] == 0).all() and (w[~erased] == 0).all()
    # placed uniformly: the mean top-left corner is near the middle of its allowed range
    assert abs(((top[erased] - (height - h[erased]) / 2).float()).mean().item()) < 0.5


def test_erased_sizes_are_distributed_as_torchvisions_random_erasing() -> None:
    from torchvision.transforms import v2

    torch.manual_seed(0)
    reference = v2.RandomErasing(p=1.0)
    image = torch.zeros(1, 28, 28)
    drawn = [reference.make_params([image]) for _ in range(3000)]
    tv_h = torch.tensor([float(d["h"]) for d in drawn])
    tv_w = torch.tensor([float(d["w"]) for d in drawn])
    boxes = draw_erase_boxes(3000, 28, 28, p=1.0, generator=torch.Generator().manual_seed(1))
    ours_h, ours_w = boxes[:, 2].float(), boxes[:, 3].float()
    # means of 3,000 draws each, seeds fixed (a side's std is about 5.4 px: the difference of two
    # means has a standard error of about 0.14 px; 20,000 draws gave 11.83/11.94 vs 11.84/11.92)
    assert abs(ours_h.mean() - tv_h.mean()) < 0.3 and abs(ours_w.mean() - tv_w.mean()) < 0.3
    assert abs((ours_h * ours_w).mean() - (tv_h * tv_w).mean()) < 6  # pixels, of about 136


def test_no_rectangle_fits_a_tiny_image_so_nothing_is_erased() -> None:
    # a rectangle must fit strictly inside (h < H, w < W): a 1x1 image holds none, and
    # RandomErasing then leaves the image as it is
    boxes = draw_erase_boxes(50, 1, 1, p=1.0, generator=torch.Generator().manual_seed(0))
    assert (boxes[:, 2:] == 0).all()


def test_the_chain_is_deterministic_under_a_seed_and_draws_in_a_fixed_order() -> None:
    images = _batch(n=32, h=28, w=28)
    augment = BatchAugment(crop_padding=2, flip=True, erase=0.5)
    a = augment(images, torch.Generator().manual_seed(5))
    b = augment(images, torch.Generator().manual_seed(5))
    c = augment(images, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the same result from the parts, drawn in the order crop, flip, erase
    g = torch.Generator().manual_seed(5)
    x = translate(images, 2, draw_offsets(32, 2, g))
    x = mirror(x, draw_mirror(32, g))
    x = erase_rectangles(x, draw_erase_boxes(32, 28, 28, 0.5, generator=g))
    assert torch.equal(a, x) and a.dtype == torch.uint8


def test_spec_parses_and_round_trips() -> None:
    assert BatchAugment.parse("crop,flip,erase") == BatchAugment(2, True, 0.5)
    assert BatchAugment.parse("crop=4, erase=0.25") == BatchAugment(crop_padding=4, erase=0.25)
    assert BatchAugment.parse(BatchAugment(3, True, 0.1).spec()) == BatchAugment(3, True, 0.1)
    assert not BatchAugment.parse("").active
    for bad in ("rotate", "flip=1", "crop=x", "erase=2"):
        with pytest.raises(ValueError, match="crop|erase|--batch-augment"):
            BatchAugment.parse(bad)


def test_tensor_batches_augment_each_batch_as_stored_then_normalize() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (40,), generator=g)
    augment = BatchAugment(crop_padding=2, flip=True, erase=0.5)
    batches = TensorBatches(
        images, labels, 16, shuffle=True, seed=9, mean=(0.5,), std=(0.25,), batch_augment=augment
    )
    got = list(batches)
    # the reference: the same generator, permutation first, then each batch's parameters
    gen = torch.Generator().manual_seed(9 * 1_000_003)
    order = torch.randperm(40, generator=gen)
    for start, (x, y) in zip(range(0, 40, 16), got, strict=True):
        index = order[start : start + 16]
        expected = (augment(images[index], gen).float() / 255 - 0.5) / 0.25
        assert torch.allclose(x, expected, atol=1e-5) and torch.equal(y, labels[index])
    assert [torch.equal(a[0], b[0]) for a, b in zip(got, list(batches), strict=True)] == [True] * 3
    assert not math.isclose(got[0][0].std().item(), 0.0)


def test_tensor_batches_refuse_batch_augmentation_of_boxes_and_a_double_flip() -> None:
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="only images with class targets"):
        TensorBatches(images, {"boxes": torch.zeros(4, 4)}, batch_augment=BatchAugment(2))
    with pytest.raises(ValueError, match="flip: given twice"):
        TensorBatches(images, torch.zeros(4), flip=True, batch_augment=BatchAugment(flip=True))
