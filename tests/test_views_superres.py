"""Super-resolution's deployment tools (issue 16): the ONNX export (any height and width, the scale
and colour convention in the metadata) and ``cnnkit upscale --onnx``, the report's PSNR/SSIM table
and its bicubic | cnnkit | original samples, the app's upscaled image beside bicubic.

One tiny run (EDSR ×2, F=8, 2 blocks, with the residual over bicubic, as the shipped weights; one
epoch on eight 40 × 48 synthetic photos) serves them. References: the PyTorch path (``cnnkit upscale --run``,
``cnnkit.pretrained.superres.upscale``: the ONNX path must give its pixels), ``test_metrics.json``
(the tables), PIL's bicubic through ``cnnkit.layers.upsample.bicubic_resize`` (checked against PIL
in ``test_superres.py``).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from deploy_runs import app_client
from PIL import Image
from test_superres import smooth_photo, write_photos

from cnnkit.cli import main
from cnnkit.deploy.views import get_view
from cnnkit.train import rundir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = write_photos(tmp_path_factory.mktemp("data") / "photos", n=8, size=(40, 48))
    out = tmp_path_factory.mktemp("runs") / "sr"
    code = main(
        ["train", "--task", "superres", "--model", "edsr", "--model-option", "scale=2",
         "--model-option", "residual=true", "--model-option", "features=8",
         "--model-option", "blocks=2", "--data", f"photos:{root}",
         "--data-option", "patch_size=32", "--data-option", "patches=16", "--epochs", "1",
         "--batch-size", "8", "--device", "cpu", "--workers", "0", "--out", str(out),
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="the optional extra 'onnx' is not installed")
    path = tmp_path_factory.mktemp("onnx") / "sr.onnx"
    assert main(["export", str(run), "--onnx", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 27 × 35 colour photo: odd sides, neither the training patches' size nor the export's."""
    path = tmp_path_factory.mktemp("in") / "odd.png"
    Image.fromarray(smooth_photo(27, 35, seed=11)).save(path)
    return path


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


# ---- ONNX ----------------------------------------------------------------------------------------


def test_the_export_takes_any_size_and_records_scale_colour_and_chroma(run, exported):
    import onnx

    from cnnkit.deploy.onnx import OnnxModel

    proto = onnx.load(str(exported))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["cnnkit.scale"] == "2" and props["cnnkit.dynamic_size"] == "true"
    assert props["cnnkit.color"].startswith("ITU-R BT.601 Y")
    assert props["cnnkit.chroma"].startswith("CbCr bicubic outside the graph")
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[2:] == ["height", "width"]
    # the graph at a size it was not traced at gives the model's output (the residual's
    # antialiased bicubic included)
    from cnnkit.cli._common import load_run

    _, _, model, _, _ = load_run(run)
    x = torch.rand(1, 1, 13, 21, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    got = OnnxModel(exported, threads=1)(x)
    assert got.shape == (1, 1, 26, 42)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # the tiles' context travels with the file: EDSR with 2 blocks depends on 2·2 + 3 pixels
    from cnnkit.cli.upscale import OnnxUpscaler

    assert props["cnnkit.receptive_radius"] == str(model.receptive_radius) == "7"
    assert OnnxUpscaler(str(exported)).receptive_radius == 7


def test_upscale_onnx_writes_the_pixels_of_upscale_run(run, exported, photo, tmp_path, capsys):
    """The same 54 × 70 picture as the PyTorch path, to one grey level (onnxruntime's float
    rounding may tip a value at .5 the other way)."""
    assert main(["upscale", str(photo), "--run", str(run), "--out", str(tmp_path / "a.png")]) == 0
    onnx_argv = ["upscale", str(photo), "--onnx", str(exported), "--out", str(tmp_path / "b.png")]
    assert main(onnx_argv) == 0
    assert "(35x27 -> 70x54, x2)" in capsys.readouterr().out
    mine, theirs = _png(tmp_path / "a.png"), _png(tmp_path / "b.png")
    assert mine.shape == theirs.shape == (54, 70, 3)
    assert np.abs(mine - theirs).max() <= 1


def test_upscale_onnx_refuses_a_scale_the_file_does_not_have(exported, photo, tmp_path, capsys):
    argv = ["upscale", str(photo), "--onnx", str(exported), "--scale", "4"]
    assert main([*argv, "--out", str(tmp_path / "x.png")]) == 2
    assert f"--scale 4: {exported} upscales by 2" in capsys.readouterr().err


# ---- drawing and the report ----------------------------------------------------------------------


def test_draw_puts_bicubic_left_of_the_model_and_the_original_right():
    """Y 0.5 everywhere: bicubic keeps it (128 after rounding); the model's Y and the original are
    distinct constants, so each third of the picture is identified by its value."""
    images = torch.full((1, 3, 4, 5), 128, dtype=torch.uint8)
    decoded = torch.full((1, 1, 8, 10), 0.2)
    targets = {"hr": torch.full((1, 1, 8, 10), 0.9), "lr": torch.full((1, 1, 4, 5), 0.5)}
    drawn = get_view("superres").draw_samples(images, decoded, targets, [])
    gap = 4
    assert drawn.shape == (1, 3, 8, 3 * 10 + 2 * gap) and drawn.dtype == torch.uint8
    assert (drawn[..., :10] == 128).all()
    assert (drawn[..., 10 : 10 + gap] == 255).all()
    assert (drawn[..., 10 + gap : 20 + gap] == 51).all()  # round(0.2 * 255)
    assert (drawn[..., 20 + 2 * gap :] == 230).all()  # round(0.9 * 255)


def test_the_report_tabulates_psnr_and_ssim_against_bicubic_and_draws_samples_offline(run):
    assert main(["report", str(run)]) == 0
    report = (run / "report.html").read_text()
    metrics = json.loads((run / rundir.TEST_METRICS).read_text())
    table = report.split("cnnkit vs bicubic</h3>")[1].split("</table>")[0]
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in table.split("</tr>") if "<td>" in row]
    psnr, bicubic_psnr = metrics["test_psnr"], metrics["test_bicubic_psnr"]
    ssim, bicubic_ssim = metrics["test_ssim"], metrics["test_bicubic_ssim"]
    assert rows == [
        ["PSNR (dB)", f"{psnr:.2f}", f"{bicubic_psnr:.2f}", f"{psnr - bicubic_psnr:+.2f}"],
        ["SSIM", f"{ssim:.4f}", f"{bicubic_ssim:.4f}", f"{ssim - bicubic_ssim:+.4f}"],
    ]
    assert f"border crop {metrics['border_crop']} px" in report
    assert "Sample predictions" in report and "<script" not in report and "http" not in report


# ---- the app -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(run):
    return app_client([run])


def _data_png(page: str, element_id: str) -> np.ndarray:
    import base64
    import io

    found = re.search(rf'<img id="{element_id}"[^>]*src="data:image/png;base64,([^"]+)"', page)
    assert found, element_id
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(found.group(1)))), dtype=np.int16)


def test_the_app_shows_the_upload_upscaled_beside_bicubic(client, run, photo):
    """The upload (35 × 27, colour, not resized) upscaled to 70 × 54: ``id="upscaled"`` is what
    ``cnnkit upscale --run`` writes, ``id="bicubic"`` PIL's bicubic of Y, Cb and Cr."""
    from cnnkit.cli._common import load_run
    from cnnkit.data.images import read_image
    from cnnkit.data.superres import rgb_to_ycbcr, ycbcr_to_rgb
    from cnnkit.layers.upsample import bicubic_resize
    from cnnkit.pretrained.superres import upscale

    answer = client.post(
        "/predict", data={"run": run.name},
        files={"image": (photo.name, photo.read_bytes(), "image/png")},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    page = answer.text
    assert re.search(r'<p id="result">upscaled ×2: .*35 × 27.*70 × 54', page)
    _, _, model, _, _ = load_run(run)
    image = read_image(photo, "RGB")
    with torch.no_grad():
        expected = upscale(model, image).permute(1, 2, 0).numpy().astype(np.int16)
    upscaled = _data_png(page, "upscaled")
    assert upscaled.shape == (54, 70, 3)
    assert np.abs(upscaled - expected).max() == 0
    ycbcr = bicubic_resize(rgb_to_ycbcr(image)[None], (54, 70))
    bicubic = ycbcr_to_rgb(ycbcr)[0].clamp(0, 1).mul(255).round().byte()
    assert np.array_equal(_data_png(page, "bicubic"), bicubic.permute(1, 2, 0).numpy())
    assert not np.array_equal(upscaled, _data_png(page, "bicubic"))  # the model did something
