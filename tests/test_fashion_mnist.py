"""Fashion-MNIST loading: the book's split, where files are looked for, and the verified download.

Reference facts: Xiao, Rasul & Vollgraf 2017 (arXiv:1708.07747): 60,000 training and 10,000 test
28×28 grey images, 10 classes, 6,000 training and 1,000 test images per class.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest
import torch

from cnnkit.data import FASHION_MNIST_CLASSES, IDXError, download_fashion_mnist, load_fashion_mnist
from cnnkit.data import fashion_mnist as fm


def test_book_split_sizes_shapes_and_dtypes(fashion_mnist):
    (xt, yt), (xv, yv), (xs, ys) = fashion_mnist
    assert (len(xt), len(xv), len(xs)) == (55_000, 5_000, 10_000)
    assert xt.shape[1:] == (28, 28) and xt.dtype == torch.uint8
    assert yt.dtype == torch.int64
    # The test set is balanced: 1,000 images per class (the dataset paper, Table 1).
    assert torch.bincount(ys).tolist() == [1_000] * 10
    # Train + validation hold 6,000 images per class between them.
    assert (torch.bincount(yt) + torch.bincount(yv)).tolist() == [6_000] * 10


def test_class_names_follow_the_dataset_labels():
    assert len(FASHION_MNIST_CLASSES) == 10
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top" and FASHION_MNIST_CLASSES[9] == "Ankle boot"


def _copy_real_files(dest):
    src = next(r for r in fm.candidate_roots() if (r / "t10k-labels-idx1-ubyte.gz").is_file())
    dest.mkdir(parents=True, exist_ok=True)
    for f in fm._FILES.values():
        shutil.copy(src / f.name, dest / f.name)
    return dest


def test_an_explicit_root_is_used_alone(tmp_path):
    # The real files exist elsewhere, but an explicit root that lacks them is an error naming it.
    with pytest.raises(FileNotFoundError, match=str(tmp_path)) as info:
        load_fashion_mnist(tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)


def test_a_corrupt_file_is_an_error_not_skipped(tmp_path):
    root = _copy_real_files(tmp_path / "fm")
    labels = root / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-100])
    with pytest.raises(IDXError, match="t10k-labels-idx1-ubyte.gz"):
        load_fashion_mnist(root)


def test_cnnkit_data_comes_before_the_cache_and_debian(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path))
    roots = fm.candidate_roots()
    assert roots[0] == tmp_path / "fashion-mnist"
    assert roots[-1] == fm.DEBIAN_ROOT


def test_raw_uncompressed_files_are_found_too(tmp_path):
    root = _copy_real_files(tmp_path / "fm")
    labels = root / "t10k-labels-idx1-ubyte.gz"
    (root / "t10k-labels-idx1-ubyte").write_bytes(
        __import__("gzip").decompress(labels.read_bytes())
    )
    labels.unlink()
    (_, _), (_, _), (_, ys) = load_fashion_mnist(root)
    assert len(ys) == 10_000


@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server (loopback only) serving the real files, standing in for the official site."""
    served = _copy_real_files(tmp_path / "served")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()


def test_download_verifies_sha256_and_the_loader_reads_it(tmp_path, file_server):
    url, _ = file_server
    dest = download_fashion_mnist(tmp_path / "cache", base_url=url)
    (xt, _), _, (xs, ys) = load_fashion_mnist(dest)
    assert len(xt) == 55_000 and len(xs) == 10_000


def test_a_download_with_the_wrong_digest_is_rejected_and_leaves_nothing(tmp_path, file_server):
    url, served = file_server
    (served / "train-labels-idx1-ubyte.gz").write_bytes(
        __import__("gzip").compress(b"\0\0\x08\1\0\0\0\1\7")
    )
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz: sha256 is"):
        download_fashion_mnist(tmp_path / "cache", base_url=url)
    assert not (tmp_path / "cache" / "train-labels-idx1-ubyte.gz").exists()
    assert not list((tmp_path / "cache").glob(".*.tmp"))


def test_the_loader_downloads_into_the_cache_when_nothing_is_found(tmp_path, monkeypatch):
    src = _copy_real_files(tmp_path / "mirror")
    fetched = []

    def fake_fetch(url, dest):
        fetched.append(url.rsplit("/", 1)[1])
        shutil.copy(src / url.rsplit("/", 1)[1], dest)

    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    monkeypatch.setattr(fm, "DEBIAN_ROOT", tmp_path / "no-debian")
    monkeypatch.setattr(fm, "_cache_root", lambda: tmp_path / "cache")
    monkeypatch.setattr("cnnkit.io._urlopen", fake_fetch)
    (_, _), (_, yv), _ = load_fashion_mnist()
    assert len(yv) == 5_000
    assert sorted(fetched) == sorted(f.name for f in fm._FILES.values())
    with pytest.raises(FileNotFoundError, match="Get it one of these ways"):
        monkeypatch.setattr(fm, "_cache_root", lambda: tmp_path / "empty-cache")
        load_fashion_mnist(download=False)


def test_train_on_valid_adds_the_validation_images_to_training_and_keeps_the_rest(
    fashion_mnist, monkeypatch
):
    from cnnkit.data.datasets import load_data, load_data_from_meta

    monkeypatch.setattr("cnnkit.data.datasets.load_fashion_mnist", lambda root=None: fashion_mnist)
    plain = load_data("fashion-mnist")
    final = load_data("fashion-mnist", options={"train_on_valid": True})
    (xt, yt), (xv, yv), (xs, ys) = fashion_mnist
    x, y = final.splits["train"]
    assert x.shape == (60_000, 1, 28, 28) and torch.equal(y, torch.cat([yt, yv]))
    assert torch.equal(x[55_000:, 0], xv) and torch.equal(x[:55_000], plain.splits["train"][0])
    assert torch.equal(final.splits["valid"][1], yv) and torch.equal(final.splits["test"][1], ys)
    # recorded, so that a run's data loads again the same way (resume, evaluate)
    assert final.meta.source["options"] == {"train_on_valid": True}
    assert "options" not in plain.meta.source
    assert len(load_data_from_meta(final.meta).splits["train"][0]) == 60_000
    with pytest.raises(ValueError, match="'n_train': fashion-mnist takes train_on_valid"):
        load_data("fashion-mnist", options={"n_train": 10})
    with pytest.raises(ValueError, match="train_on_valid='yes': expected true or false"):
        load_data("fashion-mnist", options={"train_on_valid": "yes"})
