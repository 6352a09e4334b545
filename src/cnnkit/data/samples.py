"""The notes' two sample images, shipped with scikit-learn."""

from __future__ import annotations

import numpy as np

SAMPLE_IMAGES = ("china.jpg", "flower.jpg")


def load_sample_images() -> np.ndarray:
    """``china.jpg`` and ``flower.jpg`` as a float32 array (2, 427, 640, 3) scaled to [0, 1]."""
    from sklearn.datasets import load_sample_image

    return np.stack([load_sample_image(name) for name in SAMPLE_IMAGES]).astype(np.float32) / 255
