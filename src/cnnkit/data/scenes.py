"""Fashion-MNIST scenes: real Fashion-MNIST items composed onto larger canvases, with exact boxes and
masks, for detection, localization and segmentation without downloading anything.

A scene is made in three steps (``make_scenes``), every random draw from one seeded NumPy generator,
so the same arguments give the same scenes:

1. **Items.** 1 to ``max_objects`` items per image (``max_objects=1``: exactly one, for
   classification + localization), each a Fashion-MNIST image of the requested split (train scenes
   from the book's 55,000 training images, valid scenes from its 5,000 validation images, test
   scenes from the 10,000 test images), scaled by a factor drawn uniformly from ``scale`` (0.75-3x:
   21 to 84 pixels on a side, so small, medium and large boxes all occur) with antialiased bilinear
   resizing. An item's pixels are those brighter than ``threshold`` after resizing.
2. **Placement.** Items are placed one after the other at uniform positions, each box overlapping
   the boxes already placed by at most ``max_iou`` (IoU as ``torchvision.ops.box_iou`` defines it;
   20 tries, then the item is left out). Later items are drawn on top: occlusion. An item left with less than
   ``min_visible`` of its pixels visible is dropped and the scene is drawn again without it, so no
   visible item lacks a box and no box marks an item that cannot be seen.
3. **Background** under the items: ``plain`` (one grey level, 0-40), ``noise`` (Gaussian, sigma 16,
   around such a level), ``clutter`` (blurred 14x14 fragments of other items of the same split,
   at half brightness, faded towards their edges), or ``mixed`` (one of the three per scene).

Per scene: the image (uint8, 1 channel), one instance mask per item (its *visible* pixels, so the
masks of a scene never share a pixel), the box (xyxy, continuous pixel coordinates as in
``cnnkit.data.annotations``: the tight box of the visible pixels, x2 = last column + 1), the label,
and a semantic mask (0 = background, class k = k + 1: ``cnnkit.data.segmentation.OBJECT_OFFSET``,
the convention of label maps made from objects, so the scenes' annotation files read back as these
masks). ``Scenes.to_annotations()`` turns them into ``Annotations`` for writing in any annotation
format.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.data.annotations import AnnotatedImage, Annotations
from cnnkit.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from cnnkit.data.segmentation import OBJECT_OFFSET

SPLITS = ("train", "valid", "test")
BACKGROUNDS = ("plain", "noise", "clutter", "mixed")
PLACEMENT_TRIES = 20


@dataclass
class Scenes:
    """``N`` generated scenes, in memory.

    ``images`` uint8 (N, 1, H, W); ``semantic`` uint8 (N, H, W), 0 = background, class k = k + 1;
    ``instances`` uint8 (N, H, W), 0 = background, j + 1 = object j of that scene (the instance
    masks, stored as one map: they are disjoint by construction); per scene ``boxes`` float32
    (M, 4) xyxy, ``labels`` int64 (M,) and ``sources`` int64 (M,), each object's index in the
    Fashion-MNIST ``split`` it was drawn from (``load_fashion_mnist()``'s split of that name).
    """

    images: torch.Tensor
    semantic: torch.Tensor
    instances: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    sources: list[torch.Tensor]
    split: str
    classes: tuple[str, ...] = FASHION_MNIST_CLASSES

    def __len__(self) -> int:
        return len(self.images)

    def masks(self, index: int) -> torch.Tensor:
        """The instance masks of scene ``index``, bool (M, H, W)."""
        ids = torch.arange(1, len(self.labels[index]) + 1, dtype=torch.uint8)
        return self.instances[index].unsqueeze(0) == ids.view(-1, 1, 1)

    def target(self, index: int) -> dict[str, torch.Tensor]:
        """Scene ``index``'s target as ``AnnotatedDataset`` gives it: ``boxes``
        (``tv_tensors.BoundingBoxes``, XYXY), ``labels``, ``masks`` (``tv_tensors.Mask``), so
        ``transforms.v2`` can move them with ``tv_tensors.Image(scenes.images[index])``."""
        from torchvision import tv_tensors

        height, width = self.images.shape[-2:]
        return {
            "boxes": tv_tensors.BoundingBoxes(
                self.boxes[index], format="XYXY", canvas_size=(int(height), int(width))
            ),
            "labels": self.labels[index],
            "masks": tv_tensors.Mask(self.masks(index)),
        }

    def file_name(self, index: int) -> str:
        return f"{index:06d}.png"

    def to_annotations(self, image_root: str | os.PathLike | None = None) -> Annotations:
        """The scenes as ``Annotations`` (file names ``000000.png``, ...; masks included)."""
        height, width = self.images.shape[-2:]
        images = [
            AnnotatedImage(
                self.file_name(i), int(width), int(height), self.boxes[i], self.labels[i],
                self.masks(i), image_id=i + 1,
            )
            for i in range(len(self))
        ]  # fmt: skip
        root = Path(image_root) if image_root is not None else None
        return Annotations(list(self.classes), images, None, root)

    def save_images(self, folder: str | os.PathLike) -> None:
        """Each image as a greyscale PNG ``folder/000000.png``, ... (``file_name``)."""
        from PIL import Image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(self.images[:, 0].numpy()):
            Image.fromarray(image, mode="L").save(folder / self.file_name(i))


def _resize_items(items: torch.Tensor, sizes: np.ndarray) -> list[np.ndarray]:
    """Each 28x28 item resized to its size x size, one ``F.interpolate`` call per distinct size."""
    out: list[np.ndarray] = [np.empty(0)] * len(items)
    for size in np.unique(sizes):
        chosen = np.flatnonzero(sizes == size)
        batch = items[torch.from_numpy(chosen)].unsqueeze(1)  # uint8 in, uint8 out (rounded)
        resized = F.interpolate(
            batch, size=(int(size), int(size)), mode="bilinear", antialias=True, align_corners=False
        )
        for k, patch in zip(chosen, resized.squeeze(1).numpy(), strict=True):
            out[k] = patch
    return out


def _crop_to_pixels(patch: np.ndarray, threshold: int) -> np.ndarray:
    """``patch`` cut to the rows and columns holding item pixels, so placement and overlap work on
    the item itself, not on the dark margin around it."""
    rows = np.flatnonzero((patch > threshold).any(1))
    cols = np.flatnonzero((patch > threshold).any(0))
    if not len(rows):
        return patch[:0, :0]
    return patch[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _backgrounds(
    kinds: np.ndarray, canvas: int, split_images: torch.Tensor, rng: np.random.Generator
) -> np.ndarray:
    """(N, canvas, canvas) uint8 backgrounds of the given kinds (0 plain, 1 noise, 2 clutter)."""
    n = len(kinds)
    levels = rng.integers(0, 41, n).astype(np.uint8)
    out = np.empty((n, canvas, canvas), dtype=np.uint8)
    out[:] = levels[:, None, None]
    noisy = np.flatnonzero(kinds == 1)
    if len(noisy):
        # Each scene's noise is a window of one (2 canvas)^2 field of N(0, 16^2) at its own random
        # offset: i.i.d. pixels within a scene for 1/20 the draws and memory passes of a field per scene.
        field = np.round(16.0 * rng.standard_normal((2 * canvas, 2 * canvas), dtype=np.float32))
        windows = np.lib.stride_tricks.sliding_window_view(field.astype(np.int16), (canvas, canvas))
        offsets = rng.integers(0, canvas + 1, (len(noisy), 2))
        noise = windows[offsets[:, 0], offsets[:, 1]]  # (len(noisy), canvas, canvas)
        out[noisy] = np.clip(levels[noisy, None, None] + noise, 0, 255).astype(np.uint8)
    cluttered = np.flatnonzero(kinds == 2)
    if len(cluttered):
        from torchvision.transforms.v2 import functional as TF

        per_scene, crop, size = 6, 14, max(canvas // 4, 4)
        count = len(cluttered) * per_scene
        items = torch.from_numpy(rng.integers(0, len(split_images), count))
        offsets = rng.integers(0, 28 - crop + 1, (count, 2))
        rows = torch.from_numpy(offsets[:, :1] + np.arange(crop))  # (count, crop)
        cols = torch.from_numpy(offsets[:, 1:] + np.arange(crop))
        fragments = split_images[items[:, None, None], rows[:, :, None], cols[:, None, :]]
        # blurred at 14 x 14, then enlarged: the same look as blurring at full size, 1/5 the work
        fragments = TF.gaussian_blur(
            fragments.float().unsqueeze(1), kernel_size=[5, 5], sigma=[1.0, 1.0]
        )
        fragments = F.interpolate(fragments, size=(size, size), mode="bilinear")
        # fade each fragment out towards its edges (a Hann window), so none shows a hard square rim
        window = torch.hann_window(size + 2, periodic=False)[1:-1]
        faded = (0.5 * fragments * torch.outer(window, window)).squeeze(1)
        pieces = faded.round().clamp(0, 255).to(torch.uint8).numpy()
        positions = rng.integers(0, canvas - size + 1, (count, 2))
        for k in range(count):  # a slice per fragment: 6 per scene, ~10 us each
            y, x = positions[k]
            target = out[cluttered[k // per_scene], y : y + size, x : x + size]
            np.maximum(target, pieces[k], out=target)
    return out


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with several, as ``torchvision.ops.box_iou`` defines it. NumPy here
    because it runs once per placement try on a handful of boxes: 7 us a call against box_iou's
    42 us (tensor creation included), 0.5 s of the ~2 s that 5,000 scenes take."""
    if not len(boxes):
        return np.zeros(0)
    wh = np.clip(np.minimum(box[2:], boxes[:, 2:]) - np.maximum(box[:2], boxes[:, :2]), 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def _place(
    patches: list[np.ndarray], canvas: int, max_iou: float, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """(item, y, x) for the items placed, in drawing order."""
    placed: list[tuple[int, int, int]] = []
    boxes = np.zeros((0, 4))
    for k, patch in enumerate(patches):
        h, w = patch.shape
        for _ in range(PLACEMENT_TRIES):
            y, x = int(rng.integers(0, canvas - h + 1)), int(rng.integers(0, canvas - w + 1))
            box = np.array([x, y, x + w, y + h], dtype=np.float64)
            if not len(boxes) or _box_iou(box, boxes).max() <= max_iou:
                placed.append((k, y, x))
                boxes = np.vstack([boxes, box])
                break
    return placed


def _paint_ids(
    masks: list[np.ndarray], placed: list[tuple[int, int, int]], canvas: int
) -> np.ndarray:
    ids = np.zeros((canvas, canvas), dtype=np.uint8)
    for j, (k, y, x) in enumerate(placed):
        h, w = masks[k].shape
        ids[y : y + h, x : x + w][masks[k]] = j + 1
    return ids


def make_scenes(
    n: int,
    split: str = "train",
    seed: int = 0,
    *,
    canvas: int = 128,
    max_objects: int = 6,
    min_objects: int = 1,
    scale: tuple[float, float] = (0.75, 3.0),
    max_iou: float = 0.5,
    min_visible: float = 0.5,
    threshold: int = 16,
    background: str = "plain",
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    root: str | os.PathLike | None = None,
) -> Scenes:
    """``n`` seeded scenes from the Fashion-MNIST ``split`` (see the module docstring).

    ``data=(images uint8 (S, 28, 28), labels (S,))`` replaces the split (tests use small fakes);
    otherwise ``load_fashion_mnist(root)`` provides it. ``max_objects=1`` gives one object per image.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background {background!r}: expected one of {', '.join(BACKGROUNDS)}")
    if not 1 <= min_objects <= max_objects <= 255:
        raise ValueError(
            f"min_objects {min_objects}, max_objects {max_objects}: expected 1 <= min <= max <= 255"
        )
    if not 0 < scale[0] <= scale[1] or canvas < 8:
        raise ValueError(f"scale {scale}, canvas {canvas}: expected 0 < low <= high, canvas >= 8")
    if data is None:
        data = load_fashion_mnist(root)[SPLITS.index(split)]
    images, labels = data[0], torch.as_tensor(data[1], dtype=torch.int64)
    rng = np.random.default_rng([seed, SPLITS.index(split)])

    counts = rng.integers(min_objects, max_objects + 1, n)
    total = int(counts.sum())
    items = rng.integers(0, len(images), total)
    sizes = np.clip(np.round(28 * rng.uniform(scale[0], scale[1], total)), 1, canvas).astype(int)
    patches = _resize_items(images[torch.from_numpy(items)], sizes)
    patches = [_crop_to_pixels(p, threshold) for p in patches]
    masks = [p > threshold for p in patches]
    kinds = (
        rng.integers(0, 3, n)
        if background == "mixed"
        else np.full(n, BACKGROUNDS.index(background))
    )
    canvases = _backgrounds(kinds, canvas, images, rng)
    item_labels = labels[torch.from_numpy(items)].numpy()

    semantic = np.zeros((n, canvas, canvas), dtype=np.uint8)
    instances = np.zeros((n, canvas, canvas), dtype=np.uint8)
    boxes, scene_labels, sources = [], [], []
    start = 0
    for i, count in enumerate(counts):
        scene_items = list(range(start, start + count))
        start += count
        scene_items = [k for k in scene_items if masks[k].size]  # an all-dark item has no pixels
        local_masks = [masks[k] for k in scene_items]
        placed = _place([patches[k] for k in scene_items], canvas, max_iou, rng)
        # Occlusion: drop the items left with too few visible pixels, then paint the rest again
        # (removing an item only uncovers the items under it, so the others stay above the bar).
        visible = np.bincount(
            _paint_ids(local_masks, placed, canvas).ravel(), minlength=len(placed) + 1
        )
        placed = [
            p
            for j, p in enumerate(placed)
            if visible[j + 1] >= min_visible * local_masks[p[0]].sum()
        ]
        ids = _paint_ids(local_masks, placed, canvas)
        image = canvases[i]
        for j, (k, y, x) in enumerate(placed):
            patch = patches[scene_items[k]]
            h, w = patch.shape
            window = image[y : y + h, x : x + w]
            mine = ids[y : y + h, x : x + w] == j + 1
            window[mine] = patch[mine]
        objects = [scene_items[k] for k, _, _ in placed]
        scene_boxes = np.zeros((len(placed), 4), dtype=np.float32)
        for j, (k, y, x) in enumerate(placed):
            h, w = patches[scene_items[k]].shape
            rows, cols = np.nonzero(ids[y : y + h, x : x + w] == j + 1)
            scene_boxes[j] = [
                x + cols.min(),
                y + rows.min(),
                x + cols.max() + 1,
                y + rows.max() + 1,
            ]
        lut = np.zeros(256, dtype=np.uint8)
        lut[1 : len(objects) + 1] = item_labels[objects] + OBJECT_OFFSET
        semantic[i] = lut[ids]
        instances[i] = ids
        boxes.append(torch.from_numpy(scene_boxes))
        scene_labels.append(torch.from_numpy(item_labels[objects].astype(np.int64)))
        sources.append(torch.from_numpy(items[objects].astype(np.int64)))
    return Scenes(
        torch.from_numpy(canvases).unsqueeze(1),
        torch.from_numpy(semantic),
        torch.from_numpy(instances),
        boxes,
        scene_labels,
        sources,
        split,
    )
