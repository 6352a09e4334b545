"""Datasets: Fashion-MNIST, the notes' sample images, datasets by name, and in-memory mini-batches."""

from cnnkit.data.batches import TensorBatches
from cnnkit.data.datasets import DATASETS, ImageClassificationData, load_dataset
from cnnkit.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    download_fashion_mnist,
    load_fashion_mnist,
)
from cnnkit.data.idx import IDXError, read_idx, write_idx
from cnnkit.data.samples import load_sample_images

__all__ = [
    "DATASETS",
    "ImageClassificationData",
    "load_dataset",
    "FASHION_MNIST_CLASSES",
    "IDXError",
    "TensorBatches",
    "download_fashion_mnist",
    "load_fashion_mnist",
    "load_sample_images",
    "read_idx",
    "write_idx",
]
