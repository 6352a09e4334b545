"""Super-resolution: the models' shapes, PIL's bicubic as the low-resolution maker and the baseline,
BT.601 YCbCr against scikit-image, PSNR/SSIM against scikit-image, the task's loss and metrics,
``--data photos:DIR``, ``cnnkit train --task superres`` end to end, ``cnnkit upscale`` with the
shipped weights, and the weights' sha256 check."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter

from cnnkit.cli import main
from cnnkit.data.superres import (
    PatchDataset,
    low_resolution,
    modcrop,
    rgb_to_ycbcr,
    y_channel,
    ycbcr_to_rgb,
)
from cnnkit.layers.upsample import bicubic_resize
from cnnkit.metrics import psnr, ssim
from cnnkit.models import create_model, list_models
from cnnkit.tasks import get_task
from cnnkit.train import rundir


def smooth_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A (H, W, 3) uint8 image with detail at several scales (blurred noise)."""
    rng = np.random.default_rng(seed)
    image = gaussian_filter(rng.random((height, width, 3)), (1.2, 1.2, 0))
    image = (image - image.min()) / (image.max() - image.min())
    return (255 * image).round().astype(np.uint8)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image).copy()).permute(2, 0, 1).contiguous()


# ---- models ---------------------------------------------------------------------------------------
def test_the_registry_lists_both_families_under_their_task():
    assert list_models(task="superres") == ["edsr", "espcn", "fsrcnn"]


@pytest.mark.parametrize("name", ["edsr", "espcn", "fsrcnn"])
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(17, 23), (16, 16), (1, 1)])
def test_the_output_is_scale_times_the_input_for_any_size(name, scale, size):
    model = create_model(name, scale=scale, residual=scale == 3).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, *size))
    assert out.shape == (2, 1, size[0] * scale, size[1] * scale)


def test_espcn_makes_scale_squared_maps_that_pixel_shuffle_spreads_as_the_paper_says():
    model = create_model("espcn", scale=3)
    maps = model.to_subpixels(model.features(torch.rand(1, 1, 5, 7)))
    assert maps.shape == (1, 9, 5, 7)  # r² C channels at the low resolution
    # Shi et al. eq. 4: PS(T)[c, y, x] = T[C·r·(y mod r) + C·(x mod r) + c, y // r, x // r]
    t = torch.arange(9 * 2 * 2, dtype=torch.float32).reshape(1, 9, 2, 2)
    out = model.shuffle(t)[0, 0]
    for y in range(6):
        for x in range(6):
            assert out[y, x] == t[0, 3 * (y % 3) + x % 3, y // 3, x // 3]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fsrcnn_transposed_convolution_centres_each_cell_on_its_block(scale):
    model = create_model("fsrcnn", scale=scale)
    deconv = model.deconv
    assert deconv.kernel_size == (9, 9) and deconv.stride == (scale, scale)
    # one low-resolution impulse through a symmetric kernel: the response is symmetric about the
    # centre of the cell's scale x scale block (exactly at odd scales, half a pixel off at even)
    with torch.no_grad():
        deconv.weight.zero_()
        deconv.bias.zero_()
        deconv.weight[0, 0] = torch.outer(torch.hann_window(9, False), torch.hann_window(9, False))
    x = torch.zeros(1, deconv.in_channels, 7, 7)
    x[0, 0, 3, 3] = 1
    with torch.no_grad():
        response = deconv(x)[0, 0]
    centre = 3 * scale + scale // 2  # block 3 spans 3s … 3s + s - 1
    assert divmod(int(response.argmax()), response.shape[-1]) == (centre, centre)
    assert deconv(torch.zeros(1, deconv.in_channels, 7, 7)).shape[-1] == 7 * scale + (1 - scale % 2)


def test_edsr_blocks_are_residual_and_the_radius_is_one_pixel_per_3x3_convolution():
    model = create_model("edsr", scale=4, features=8, blocks=3, res_scale=0.1)
    assert model.receptive_radius == 2 * 3 + 3  # head, 2 per block, the trunk's last, the tail
    # 8x8 (head) + 3 blocks x 2 x (3x3x8x8 + 8) + the trunk's 3x3x8x8 + 8 + the tail 3x3x8x16 + 16
    assert sum(p.numel() for p in model.parameters()) == 80 + 6 * 584 + 584 + 1168
    block = model.trunk[0]
    x = torch.rand(1, 8, 6, 7)
    with torch.no_grad():
        inner = block.conv2(torch.relu(block.conv1(x)))
        assert torch.allclose(block(x.clone()), x + 0.1 * inner)
    # an impulse moves outputs no further than the radius (4 output pixels per input pixel)
    y = torch.zeros(1, 1, 31, 31)
    bumped = y.clone()
    bumped[0, 0, 15, 15] = 1
    with torch.no_grad():
        changed = (model(bumped) - model(y)).abs()[0, 0] > 0
    rows = changed.any(1).nonzero()
    assert rows.min() >= 4 * (15 - 9) and rows.max() < 4 * (15 + 9 + 1)
    assert rows.min() < 4 * (15 - 8)  # and it does reach that far
    for name, radius in (("espcn", 4), ("fsrcnn", 2 + 4 + 2)):  # the 9x9 deconv: 4 HR = 2 LR px
        assert create_model(name, scale=2).receptive_radius == radius
    assert create_model("espcn", scale=2, residual=True).receptive_radius == 4


def test_residual_models_start_as_bicubic():
    x = torch.rand(1, 1, 9, 11)
    for name in ("edsr", "espcn", "fsrcnn"):
        model = create_model(name, scale=2, residual=True).eval()
        last = model.deconv if name == "fsrcnn" else model.to_subpixels
        with torch.no_grad():
            last.weight.zero_()
            assert torch.allclose(model(x), bicubic_resize(x, (18, 22)))


def test_bad_options_are_errors_naming_them():
    with pytest.raises(ValueError, match="scale=0"):
        create_model("espcn", scale=0)
    with pytest.raises(ValueError, match="residual=True .* in_channels=3, num_classes=1"):
        create_model("fsrcnn", in_channels=3, residual=True)


# ---- PIL's bicubic ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(74, 106), (12, 9), (37, 53)])
def test_bicubic_resize_is_pils_float_bicubic(size):
    rng = np.random.default_rng(1)
    image = rng.random((37, 53)).astype(np.float32)
    expected = np.asarray(Image.fromarray(image, mode="F").resize(size[::-1], Image.BICUBIC))
    found = bicubic_resize(torch.from_numpy(image)[None, None], size)[0, 0].numpy()
    np.testing.assert_allclose(found, expected, atol=1e-5)


def test_the_low_resolution_maker_is_pils_resize_of_the_modcropped_image():
    image = smooth_photo(75, 101)  # 101 x 75: cropped to 100 x 72 at scale 4
    hr, lr = low_resolution(as_tensor(image), 4)
    assert hr.shape == (3, 72, 100) and lr.shape == (3, 18, 25)
    expected = Image.fromarray(image[:72, :100]).resize((25, 18), Image.BICUBIC)
    assert torch.equal(lr, as_tensor(np.asarray(expected)))
    assert torch.equal(hr, modcrop(as_tensor(image), 4))
    # antialiased (MATLAB imresize's kernel widened by the scale), not a plain bicubic sampling
    plain = F.interpolate(hr[None].float(), size=(18, 25), mode="bicubic", align_corners=False)
    assert (plain[0].round().clamp(0, 255) - lr.float()).abs().max() > 5


# ---- colour ----------------------------------------------------------------------------------------
def test_ycbcr_is_scikit_images_bt601_studio_range():
    from skimage.color import rgb2ycbcr

    image = smooth_photo(20, 30)
    expected = rgb2ycbcr(image)  # Y in [16, 235], Cb/Cr in [16, 240]
    found = rgb_to_ycbcr(as_tensor(image)).permute(1, 2, 0).double().numpy() * 255
    np.testing.assert_allclose(found, expected, atol=1e-3)
    white, black = (
        torch.full((3, 1, 1), 255, dtype=torch.uint8),
        torch.zeros(3, 1, 1, dtype=torch.uint8),
    )
    assert y_channel(white).item() == pytest.approx(235 / 255)
    assert y_channel(black).item() == pytest.approx(16 / 255)


def test_ycbcr_to_rgb_inverts_it():
    rgb = torch.rand(2, 3, 5, 6)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-6)


# ---- metrics ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("border", [0, 3])
def test_psnr_and_ssim_equal_scikit_images(border):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    target = smooth_photo(40, 50)[..., 0].astype(np.float64) / 255
    rng = np.random.default_rng(2)
    pred = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1)
    crop = slice(border, -border) if border else slice(None)
    t, p = torch.from_numpy(target)[None, None], torch.from_numpy(pred)[None, None]
    assert psnr(p, t, border=border).item() == pytest.approx(
        peak_signal_noise_ratio(target[crop, crop], pred[crop, crop], data_range=1), abs=1e-4
    )
    expected = structural_similarity(
        target[crop, crop], pred[crop, crop], data_range=1, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False,
    )  # fmt: skip
    assert ssim(p, t, border=border).item() == pytest.approx(expected, abs=1e-6)


def test_metrics_are_per_image():
    target = torch.rand(3, 1, 24, 24)
    pred = target + torch.tensor([0.01, 0.1, 0.0]).view(3, 1, 1, 1) + 0.001
    values = psnr(pred, target)
    assert values.shape == (3,)
    assert values[0].item() == pytest.approx(-10 * math.log10(0.011**2), abs=1e-3)


# ---- the task --------------------------------------------------------------------------------------
def tiny_batch(seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    hrs, lrs = [], []
    for k in range(2):
        hr, lr = low_resolution(as_tensor(smooth_photo(32, 32, seed + k)), 2)
        hrs.append(y_channel(hr))
        lrs.append(y_channel(lr))
    lr_y = torch.stack(lrs)
    return lr_y, {"hr": torch.stack(hrs), "lr": lr_y}


def test_the_task_loss_is_l1_or_mse_on_y():
    x, target = tiny_batch()
    output = bicubic_resize(x, (32, 32)) + 0.01
    total, parts = get_task("superres").loss(output, target)
    assert total.item() == pytest.approx(F.l1_loss(output, target["hr"]).item())
    assert set(parts) == {"l1"}
    total, _ = get_task("superres", loss="mse").loss(output, target)
    assert total.item() == pytest.approx(F.mse_loss(output, target["hr"]).item())
    with pytest.raises(ValueError, match="loss: expected one of l1, mse, got 'l2'"):
        get_task("superres", loss="l2")


def test_the_task_metrics_stream_psnr_ssim_and_bicubics_with_a_scale_pixel_border():
    task = get_task("superres")
    assert (task.monitor, task.monitor_mode) == ("val_psnr", "max")
    batches = [tiny_batch(0), tiny_batch(5)]
    metric = task.eval_metrics()
    outputs = []
    for _, target in batches:
        output = target["hr"] + 0.02 * torch.randn_like(target["hr"])
        outputs.append(output)
        metric.update(output, target)
    scores = metric.compute()
    hr = torch.cat([t["hr"] for _, t in batches])
    lr = torch.cat([t["lr"] for _, t in batches])
    out = torch.cat(outputs).clamp(0, 1)
    # by hand: the mean over the 4 images of 10 log10(1 / MSE) on the image less 2 pixels a side
    mse = ((out - hr)[..., 2:-2, 2:-2] ** 2).mean((1, 2, 3))
    assert scores["psnr"] == pytest.approx((10 * torch.log10(1 / mse)).mean().item(), abs=1e-4)
    # bicubic: PIL's float bicubic of the low-resolution Y
    pil = [
        np.asarray(Image.fromarray(y[0].numpy(), mode="F").resize((32, 32), Image.BICUBIC))
        for y in lr
    ]
    bicubic = torch.from_numpy(np.stack(pil))[:, None].clamp(0, 1)
    mse = ((bicubic - hr)[..., 2:-2, 2:-2] ** 2).mean((1, 2, 3))
    assert scores["bicubic_psnr"] == pytest.approx(
        (10 * torch.log10(1 / mse)).mean().item(), abs=1e-3
    )
    assert scores["ssim"] == pytest.approx(ssim(out, hr, border=2).mean().item(), abs=1e-6)
    assert scores["psnr_gain"] == pytest.approx(scores["psnr"] - scores["bicubic_psnr"])
    assert scores["loss"] == pytest.approx(F.l1_loss(torch.cat(outputs), hr).item(), rel=1e-5)


def test_an_output_of_the_wrong_scale_is_an_error_naming_the_shapes():
    x, target = tiny_batch()
    with pytest.raises(ValueError, match=r"output has shape \(2, 1, 64, 64\)"):
        get_task("superres").loss(torch.zeros(2, 1, 64, 64), target)


# ---- --data photos:DIR -----------------------------------------------------------------------------
def write_photos(folder, n: int = 8, size: tuple[int, int] = (52, 60)):
    folder.mkdir(parents=True)
    for k in range(n):
        Image.fromarray(smooth_photo(*size, seed=k)).save(folder / f"p{k}.png")
    return folder


def test_photo_patches_are_aligned_pil_pairs_and_depend_on_the_seed_only(tmp_path):
    from cnnkit.data.datasets import load_data

    root = write_photos(tmp_path / "photos", n=1, size=(32, 40))
    data = load_data(f"photos:{root}", task="superres",
                     options={"scale": 2, "patch_size": 32, "dihedral": False})  # fmt: skip
    assert data.input_size == (1, 16, 16) and data.splits["valid"] is None
    photo = as_tensor(np.asarray(Image.open(root / "p0.png")))
    hr, lr = low_resolution(photo, 2)
    dataset = PatchDataset(*data.train, scale=2, lr_patch=16, seed=3, dihedral=False)
    x, target = dataset[7]
    # the 16 x 16 LR patch sits somewhere in the PIL-made LR photo, its HR patch at twice the place
    windows = y_channel(lr).unfold(1, 16, 1).unfold(2, 16, 1)[0]  # rows x cols x 16 x 16
    hits = (windows == x[0]).flatten(2).all(2).nonzero()
    assert len(hits) >= 1
    top, left = hits[0].tolist()
    assert torch.equal(
        target["hr"], y_channel(hr[:, 2 * top : 2 * top + 32, 2 * left : 2 * left + 32])
    )
    again = PatchDataset(*data.train, scale=2, lr_patch=16, seed=3)
    assert torch.equal(again[7][0], PatchDataset(*data.train, scale=2, lr_patch=16, seed=3)[7][0])
    other = PatchDataset(*data.train, scale=2, lr_patch=16, seed=4)
    assert any(not torch.equal(again[i][0], other[i][0]) for i in range(4))


def test_an_epochs_batches_repeat_under_the_seed(tmp_path):
    from cnnkit.data.datasets import load_data

    root = write_photos(tmp_path / "photos", n=8)
    data = load_data(f"photos:{root}", task="superres", options={"patch_size": 32, "patches": 6})
    first = [x for x, _ in data.batches("train", 3, shuffle=True, seed=1, workers=0)]
    second = [x for x, _ in data.batches("train", 3, shuffle=True, seed=1, workers=0)]
    assert len(first) == 2 and first[0].shape == (3, 1, 16, 16)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    (x, target), *_ = list(data.batches("valid", 500, workers=0))  # whole photos, one a batch
    assert x.shape == (1, 1, 26, 30) and target["hr"].shape == (1, 1, 52, 60)


def test_the_patch_sampler_draws_what_randomsampler_drew_for_the_shipped_weights():
    from torch.utils.data import RandomSampler

    from cnnkit.data.superres import VIRTUAL_PATCHES, RandomPatches

    class Virtual:
        def __len__(self) -> int:
            return VIRTUAL_PATCHES

    for count in (45, 64):
        expected = RandomSampler(
            Virtual(), replacement=True, num_samples=count,
            generator=torch.Generator().manual_seed(3),
        )  # fmt: skip
        found = RandomPatches(count, torch.Generator().manual_seed(3))
        assert list(found) == list(expected)


def test_photo_errors_name_the_file(tmp_path):
    from cnnkit.data.datasets import load_data

    root = write_photos(tmp_path / "photos", n=2, size=(40, 40))
    with pytest.raises(
        ValueError, match=r"p\d\.png: the image is 40x40, smaller than a training patch"
    ):
        load_data(f"photos:{root}", task="superres", options={"patch_size": 48})
    (root / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"bad\.png: not a decodable image"):
        load_data(f"photos:{root}", task="superres", options={"patch_size": 32})
    with pytest.raises(ValueError, match="the superres task trains on photos:DIR"):
        load_data(str(root), task="superres")


# ---- cnnkit train / evaluate / upscale --run -------------------------------------------------------
@pytest.fixture(scope="module")
def superres_run(tmp_path_factory):
    root = write_photos(tmp_path_factory.mktemp("data") / "photos")
    out = tmp_path_factory.mktemp("runs") / "sr"
    code = main(
        ["train", "--task", "superres", "--model", "espcn", "--model-option", "scale=2",
         "--model-option", "residual=true", "--data", f"photos:{root}",
         "--data-option", "patch_size=32", "--data-option", "patches=32", "--epochs", "2",
         "--batch-size", "8", "--device", "cpu", "--workers", "0", "--out", str(out),
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    return out, root


def test_train_writes_a_superres_run(superres_run):
    out, _ = superres_run
    assert {rundir.CONFIG, rundir.BEST, rundir.TEST_METRICS} <= {p.name for p in out.iterdir()}
    config = json.loads((out / rundir.CONFIG).read_text())
    assert config["model"]["options"] == {"scale": 2, "residual": True}
    assert config["data"]["source"]["options"]["scale"] == 2  # the data follows the model's scale
    test = json.loads((out / rundir.TEST_METRICS).read_text())
    assert test["border_crop"] == 2
    # residual ESPCN stays near bicubic after 4 tiny steps: both PSNRs real and close
    assert 20 < test["test_bicubic_psnr"] < 60 and abs(test["test_psnr_gain"]) < 3
    rows = [json.loads(line) for line in (out / rundir.METRICS).read_text().splitlines()]
    assert {"psnr", "val_psnr", "val_ssim", "val_bicubic_psnr"} <= set(rows[-1])


def test_evaluate_reproduces_the_test_report(superres_run, capsys):
    out, _ = superres_run
    assert main(["evaluate", str(out), "--device", "cpu", "--workers", "0"]) == 0
    test = json.loads((out / rundir.TEST_METRICS).read_text())
    assert f"{test['test_psnr']:7.2f}" in capsys.readouterr().out


def test_a_scale_the_data_was_not_made_at_is_refused(superres_run, tmp_path, capsys):
    _, root = superres_run
    code = main(
        ["train", "--task", "superres", "--model", "fsrcnn", "--model-option", "scale=4",
         "--data", f"photos:{root}", "--data-option", "scale=2",
         "--data-option", "patch_size=32", "--epochs", "1",
         "--device", "cpu", "--out", str(tmp_path / "r"), "--no-progress"]
    )  # fmt: skip
    assert code == 2
    assert "upscales by 4 but the data's low-resolution images are 1/2" in capsys.readouterr().err


def test_upscale_with_a_run_writes_the_image_at_the_runs_scale(superres_run, tmp_path):
    out, root = superres_run
    target = tmp_path / "big.png"
    assert main(["upscale", str(root / "p0.png"), "--run", str(out), "--out", str(target)]) == 0
    assert Image.open(target).size == (120, 104)
    code = main(["upscale", str(root / "p0.png"), "--run", str(out), "--scale", "4",
                 "--out", str(target)])  # fmt: skip
    assert code == 2


# ---- the shipped weights ---------------------------------------------------------------------------
def test_the_shipped_weights_are_small_and_their_sha256_is_registered():
    from cnnkit.cli import upscale
    from cnnkit.io import sha256_file
    from cnnkit.pretrained.weights import SUPERRES_WEIGHTS

    assert tuple(sorted(SUPERRES_WEIGHTS)) == upscale.SHIPPED_SCALES
    assert (upscale.BEST, upscale.LAST) == (rundir.BEST, rundir.LAST)
    for scale, weights in SUPERRES_WEIGHTS.items():
        assert weights.scale == scale
        assert weights.path.stat().st_size < 1_000_000
        assert sha256_file(weights.path) == weights.sha256
        # the file says what benchmarks/train_superres.py trained: the registry builds that model
        from safetensors import safe_open

        with safe_open(str(weights.path), "pt") as shipped:
            written = shipped.metadata()
        assert (written["model"], int(written["scale"])) == (weights.model, scale)
        assert json.loads(written["options"]) == weights.options


def test_a_sha256_mismatch_is_a_clear_error(tmp_path):
    from cnnkit.pretrained.superres import load_superres
    from cnnkit.pretrained.weights import superres_weights

    shipped = superres_weights(2)
    copy = tmp_path / "superres_x2.safetensors"
    shutil.copyfile(shipped.path, copy)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    copy.write_bytes(bytes(data))
    tampered = dataclasses.replace(shipped, filename=str(copy))  # an absolute path wins
    with pytest.raises(
        ValueError, match=rf"{copy}: sha256 is [0-9a-f]{{64}}, expected {shipped.sha256}"
    ):
        load_superres(2, weights=tampered)
    with pytest.raises(
        ValueError, match=r"no shipped super-resolution weights for scale 3; shipped: x2, x4"
    ):
        load_superres(3)


def test_tiles_give_the_pixels_of_one_pass():
    from cnnkit.pretrained.superres import load_superres, upscale_y

    model = load_superres(2)
    y = torch.rand(1, 1, 45, 52)
    with torch.no_grad():
        whole = model(y).clamp(0, 1)
    assert torch.allclose(upscale_y(model, y, tile=16, margin=8), whole, atol=1e-6)
    # a deep model's own receptive radius (EDSR, 8 blocks: 19 px) overrides a smaller margin
    deep = create_model("edsr", scale=2, residual=True).eval()
    with torch.no_grad():
        deep.to_subpixels.weight.normal_(std=0.05)
        whole = deep(y).clamp(0, 1)
    assert torch.allclose(upscale_y(deep, y, tile=16, margin=4), whole, atol=1e-5)


@pytest.mark.parametrize("scale", [2, 4])
def test_upscale_beats_bicubic_on_a_held_out_photo_crop(scale, tmp_path):
    from cnnkit.data.photos import HELD_OUT, sample_photo

    assert "astronaut" in HELD_OUT
    photo = as_tensor(sample_photo("astronaut")[100:228, 160:288])  # face and suit, 128 x 128
    hr, lr = low_resolution(photo, scale)
    Image.fromarray(lr.permute(1, 2, 0).numpy()).save(tmp_path / "small.png")
    assert main(["upscale", str(tmp_path / "small.png"), "--scale", str(scale),
                 "--out", str(tmp_path / "big.png")]) == 0  # fmt: skip
    ours = as_tensor(np.asarray(Image.open(tmp_path / "big.png")))
    bicubic = Image.open(tmp_path / "small.png").resize((128, 128), Image.BICUBIC)
    reference = y_channel(hr)[None]

    def score(image: torch.Tensor) -> float:
        return psnr(y_channel(image)[None], reference, border=scale).item()

    assert score(ours) > score(as_tensor(np.asarray(bicubic))) + 0.2


def test_upscale_reports_a_bad_image_by_name_and_goes_on(tmp_path, capsys):
    bad, good = tmp_path / "broken.jpg", tmp_path / "fine.png"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    Image.fromarray(smooth_photo(20, 24)).save(good)
    code = main(["upscale", str(bad), str(good), "--scale", "2", "--out", str(tmp_path / "out")])
    assert code == 1
    assert f"{bad}: not a decodable image" in capsys.readouterr().err
    assert Image.open(tmp_path / "out" / "fine_x2.png").size == (48, 40)
    with pytest.raises(SystemExit):  # argparse: only the shipped scales
        main(["upscale", str(good), "--scale", "3", "--out", str(tmp_path / "x.png")])


def test_one_output_file_takes_one_image(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(smooth_photo(20, 24)).save(image)
    code = main(["upscale", str(image), str(image), "--out", str(tmp_path / "big.png")])
    assert code == 2 and "give a folder for several images" in capsys.readouterr().err


def test_the_cli_knows_the_task_and_the_command():
    from cnnkit.cli import COMMANDS, _common
    from cnnkit.data.photos import HELD_OUT, training_photos
    from cnnkit.tasks import list_tasks

    assert "superres" in list_tasks() and "superres" in _common.TASK_CHOICES
    assert "upscale" in COMMANDS
    assert len(HELD_OUT) >= 2 and not set(HELD_OUT) & set(training_photos())
