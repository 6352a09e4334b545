"""cnnkit.data.folder: image folders and lists, the stratified split, decode-once caching, loaders.

Reference for the split: the notes split tf_flowers 75 / 15 / 10 (train / valid / test); stratified
means each split keeps the class proportions (scikit-learn's ``train_test_split(stratify=...)``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from cnnkit.data.folder import (
    decode_image,
    decode_images,
    load_image_folder,
    read_list,
    scan_folder,
    stratified_split,
)

COLOURS = {"blue": (0, 0, 200), "green": (0, 180, 0), "red": (220, 0, 0)}


def make_folder(root: Path, per_class: int = 10, size: tuple[int, int] = (40, 48)) -> Path:
    """Class sub-folders of noisy single-colour PNGs (height, width = ``size``)."""
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            noise = rng.integers(-20, 20, (*size, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


# ---- Finding images -----------------------------------------------------------------------------


def test_scan_folder_sorts_classes_and_labels_by_subfolder(tmp_path):
    images = scan_folder(make_folder(tmp_path / "data", per_class=3))
    assert images.classes == ("blue", "green", "red")
    assert images.labels == (0, 0, 0, 1, 1, 1, 2, 2, 2)
    assert images.paths[3] == tmp_path / "data" / "green" / "000.png"


def test_scan_folder_ignores_non_images_and_rejects_an_empty_class(tmp_path):
    root = make_folder(tmp_path / "data", per_class=2)
    (root / "red" / "notes.txt").write_text("not an image")
    assert len(scan_folder(root)) == 6
    (root / "yellow").mkdir()
    with pytest.raises(ValueError, match="yellow: class folder holds no image"):
        scan_folder(root)


def test_read_csv_list_resolves_paths_next_to_the_list(tmp_path):
    make_folder(tmp_path, per_class=2)
    (tmp_path / "list.csv").write_text("path,label\nred/000.png,red\nblue/001.png,blue\n")
    images = read_list(tmp_path / "list.csv")
    assert images.classes == ("blue", "red")
    assert images.paths == (tmp_path / "red/000.png", tmp_path / "blue/001.png")
    assert images.labels == (1, 0)


def test_read_json_list_of_objects_or_pairs(tmp_path):
    items = [{"path": "a.png", "label": "cat"}, ["b.png", "dog"]]
    (tmp_path / "list.json").write_text(json.dumps(items))
    images = read_list(tmp_path / "list.json")
    assert images.classes == ("cat", "dog") and images.labels == (0, 1)


def test_list_errors_name_the_file_and_what_was_expected(tmp_path):
    (tmp_path / "bad.csv").write_text("file,class\na.png,cat\n")
    with pytest.raises(ValueError, match=r"bad\.csv: expected a header with 'path' and 'label'"):
        read_list(tmp_path / "bad.csv")
    (tmp_path / "bad.json").write_text(json.dumps([{"path": "a.png"}]))
    with pytest.raises(ValueError, match=r"bad\.json: item 0"):
        read_list(tmp_path / "bad.json")


# ---- Split --------------------------------------------------------------------------------------


def test_split_is_the_notes_75_15_10_in_every_class():
    labels = np.repeat(np.arange(10), 100)
    train, valid, test = stratified_split(labels, seed=0)
    assert (len(train), len(valid), len(test)) == (750, 150, 100)
    for split, per_class in [(train, 75), (valid, 15), (test, 10)]:
        assert Counter(labels[split].tolist()) == dict.fromkeys(range(10), per_class)


def test_split_partitions_the_images():
    labels = np.repeat(np.arange(4), 25)
    parts = stratified_split(labels, seed=1)
    combined = np.concatenate(parts)
    assert sorted(combined.tolist()) == list(range(100))


def test_split_is_reproducible_from_its_seed():
    labels = np.repeat(np.arange(5), 40)
    same = [stratified_split(labels, seed=3)[0] for _ in range(2)]
    other = stratified_split(labels, seed=4)[0]
    assert np.array_equal(same[0], same[1]) and not np.array_equal(same[0], other)


def test_split_without_a_test_set_and_bad_fractions():
    labels = np.repeat(np.arange(2), 10)
    train, valid, test = stratified_split(labels, (0.8, 0.2, 0.0))
    assert (len(train), len(valid), len(test)) == (16, 4, 0)
    with pytest.raises(ValueError, match="summing to 1"):
        stratified_split(labels, (0.8, 0.3, 0.1))


# ---- Decoding once ------------------------------------------------------------------------------


def test_decode_keeps_aspect_with_the_shorter_side_resized(tmp_path):
    Image.new("L", (80, 40), 128).save(tmp_path / "grey.png")  # width 80, height 40
    pixels = decode_image(tmp_path / "grey.png", 64)
    assert pixels.shape == (3, 64, 128) and pixels.dtype == torch.uint8
    assert torch.all(pixels == 128)


def test_unreadable_files_are_reported_together(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [tmp_path / "good.png", tmp_path / "broken.jpg", tmp_path / "empty.png"]
    with pytest.raises(ValueError, match=r"(?s)broken\.jpg.*empty\.png"):
        decode_images(paths, 16)


# ---- Loaders ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    root = make_folder(tmp_path_factory.mktemp("folder") / "data", per_class=20)
    return load_image_folder(root, image_size=32, crop_pct=0.875, batch_size=8, workers=0)


def test_loaders_serve_normalized_batches_of_the_split(folder_data):
    assert {k: len(v) for k, v in folder_data.splits.items()} == {
        "train": 45,
        "valid": 9,
        "test": 6,
    }
    x, y = next(iter(folder_data.test))
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    # A blue image: red channel near (0 - 0.485) / 0.229, blue near (200/255 - 0.406) / 0.225.
    blue = x[y == 0]
    assert blue[:, 0].mean().item() == pytest.approx(-0.485 / 0.229, abs=0.15)
    assert blue[:, 2].mean().item() == pytest.approx((200 / 255 - 0.406) / 0.225, abs=0.15)


def test_evaluation_batches_are_deterministic(folder_data):
    first = next(iter(folder_data.valid))[0]
    assert torch.equal(first, next(iter(folder_data.valid))[0])


def test_training_augments_with_crop_flip_and_colour_jitter(folder_data):
    transform = folder_data.train.dataset.transform
    kinds = [type(t) for t in transform.transforms]
    assert kinds[:3] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.ColorJitter]
    image = folder_data.train.dataset.images[0]
    torch.manual_seed(0)
    assert not torch.equal(transform(image), transform(image))


def test_worker_processes_prefetch_batches(tmp_path):
    root = make_folder(tmp_path / "data", per_class=4)
    data = load_image_folder(
        root, image_size=32, fractions=(0.5, 0.5, 0.0), batch_size=4, workers=2, prefetch=3
    )
    assert data.train.num_workers == 2 and data.train.prefetch_factor == 3 and data.test is None
    assert sum(len(y) for _, y in data.train) == 6


def test_channel_stats_are_numpys_and_a_constant_channel_is_not_scaled():
    from cnnkit.data.datasets import channel_stats

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 3, 4, 4), dtype=np.uint8)
    images[:, 1] = 40  # one grey level: std 0
    mean, std = channel_stats(torch.from_numpy(images))
    x = images.astype(np.float64) / 255
    assert mean == pytest.approx(x.mean(axis=(0, 2, 3)), abs=1e-6)
    assert std[0] == pytest.approx(x[:, 0].std(ddof=1), abs=1e-6)
    assert std[1] == 1.0  # not 0: normalizing divides by it
    one_pixel = channel_stats(torch.full((1, 1, 1, 1), 7, dtype=torch.uint8))
    assert one_pixel == ((pytest.approx(7 / 255),), (1.0,))
