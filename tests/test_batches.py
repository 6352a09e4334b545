"""In-memory mini-batches: every sample once per epoch, reproducible shuffles, exact normalization."""

from __future__ import annotations

import pytest
import torch

from cnnkit.data import TensorBatches


def make(n=10, **kw):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return TensorBatches(images, torch.arange(n), batch_size=4, **kw)


def test_each_epoch_visits_every_sample_once_in_order_without_shuffle():
    batches = make()
    assert len(batches) == 3
    labels = torch.cat([y for _, y in batches])
    assert labels.tolist() == list(range(10))


def test_shuffle_depends_on_seed_and_epoch_only():
    a, b = make(shuffle=True, seed=1), make(shuffle=True, seed=1)
    order = [torch.cat([y for _, y in a]).tolist() for _ in range(2)]
    a.set_epoch(1)
    b.set_epoch(1)
    assert torch.cat([y for _, y in a]).tolist() == torch.cat([y for _, y in b]).tolist()
    assert sorted(order[0]) == list(range(10))
    assert torch.cat([y for _, y in a]).tolist() != order[0]


def test_images_are_scaled_and_normalized():
    x, y = next(iter(make(mean=(0.5,), std=(0.25,))))
    assert x.dtype == torch.float32 and x.shape == (4, 1, 2, 2)
    expected = (y.float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(x[:, 0, 0, 0], expected)


def test_flip_mirrors_whole_images():
    images = torch.tensor([[[[0, 255]]]], dtype=torch.uint8).expand(64, 1, 1, 2).contiguous()
    x, _ = next(iter(TensorBatches(images, torch.zeros(64), 64, flip=True)))
    flipped = (x[:, 0, 0, 0] == 1).sum().item()
    assert 10 < flipped < 54  # about half, from a fixed generator
    assert torch.equal(x.sum((1, 2, 3)), torch.ones(64))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="images: expected a uint8 tensor, got torch.float32"):
        TensorBatches(torch.zeros(2, 3, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="images and targets differ in length: 2 vs 3"):
        TensorBatches(torch.zeros(2, 3, 3, dtype=torch.uint8), torch.zeros(3))
