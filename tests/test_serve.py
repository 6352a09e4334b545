"""``cnnkit serve`` (issue 16): uploads checked by content, size and pixel count; the app answers a
good image with its prediction and a bad file with a message, and keeps serving; and the same end
to end in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium),
skipped with the reason printed where they are absent."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from deploy_runs import CLASSES, app_client, make_fashion_folder, train_small_run
from PIL import Image

from cnnkit.deploy.uploads import UploadError, UploadLimits, decode_upload


def _png(size=(28, 28), mode="L", value=128) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, value).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- upload checks -----------------------------------------------------------------------------


def test_a_png_decodes_to_the_runs_channels():
    image = decode_upload(_png(mode="RGB", value=(200, 100, 50)), channels=1)
    # Pillow's L = ITU-R 601 luma: 0.299 * 200 + 0.587 * 100 + 0.114 * 50 = 124.2 -> 124
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8 and int(image[0, 0, 0]) == 124


def test_the_type_comes_from_the_content_not_the_name():
    with pytest.raises(UploadError, match="not an image: its content is none of PNG, JPEG"):
        decode_upload(b"%PDF-1.7 this is a document, whatever its name says", channels=1)


def test_an_upload_over_the_size_limit_is_refused():
    with pytest.raises(UploadError, match="the limit is 1 MiB"):
        decode_upload(b"\x89PNG" + bytes(2**20), 1, UploadLimits(max_bytes=2**20))


def test_an_image_over_the_pixel_limit_is_refused_before_decoding():
    """A 100 × 100 image against a 5,000-pixel limit: refused from its header."""
    with pytest.raises(UploadError, match="100 × 100 pixels; the limit is 5,000"):
        decode_upload(_png(size=(100, 100)), 1, UploadLimits(max_pixels=5_000))


def test_a_truncated_image_is_refused():
    data = _png(size=(64, 64), mode="RGB")
    noisy = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(noisy, format="PNG")
    with pytest.raises(UploadError, match="corrupt or truncated"):
        decode_upload(noisy.getvalue()[: len(noisy.getvalue()) // 2], 3)
    assert decode_upload(data, 3).shape == (3, 64, 64)


# ---- the app, in process -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(fashion_mnist, tmp_path_factory):
    return make_fashion_folder(tmp_path_factory.mktemp("fashion"), fashion_mnist)


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    return train_small_run(folder, tmp_path_factory.mktemp("runs") / "small")


@pytest.fixture(scope="module")
def client(run):
    return app_client([run])


def _expected_class(run, path) -> str:
    """The class `cnnkit predict` gives the file (the PyTorch path, in memory)."""
    from cnnkit.cli._common import load_run
    from cnnkit.cli.predict import read_image

    _, _, model, _, meta = load_run(run)
    with torch.no_grad():
        logits = model(meta.preprocess(read_image(path, meta.channels)).unsqueeze(0))
    return meta.class_names[int(logits.argmax())]


def test_the_page_offers_the_run_and_its_layers(client, run):
    page = client.get("/").text
    assert f'<option value="{run.name}" selected>' in page
    assert '<input type="file" name="image"' in page and "http" not in page.split("</title>")[1]


def test_an_image_gets_the_runs_prediction_with_five_bars(client, run, folder):
    path = folder / "Trouser" / "000.png"
    answer = client.post("/predict", files={"image": ("item.png", path.read_bytes(), "image/png")})
    assert answer.status_code == 200
    assert f'predicted: <b class="top1">{_expected_class(run, path)}</b>' in answer.text
    assert answer.text.count('class="bar"') == len(CLASSES)  # top-5 of 4 classes: all 4
    assert 'id="maps"' in answer.text


def test_a_bad_file_gets_a_message_and_the_server_keeps_serving(client, folder):
    answer = client.post("/predict", files={"image": ("x.png", b"\x89PNG broken", "image/png")})
    assert answer.status_code == 400
    assert '<p class="error" id="error">x.png: not an image' in answer.text
    good = (folder / "Bag" / "000.png").read_bytes()
    assert client.post("/predict", files={"image": ("b.png", good, "image/png")}).status_code == 200


def test_a_chosen_layer_shows_its_maps(client, run):
    from cnnkit.cli._common import load_run
    from cnnkit.deploy.features import conv_layers

    _, _, model, _, _ = load_run(run)
    last = conv_layers(model)[-1]
    answer = client.post(
        "/predict", data={"layer": last}, files={"image": ("a.png", _png(), "image/png")}
    )
    assert f"feature maps of {last} (first" in answer.text


# ---- the app in a real browser -------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(run):
    pytest.importorskip("uvicorn", reason="the optional extra 'serve' is not installed")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "serve", str(run), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # up to 30 s: the CLI imports torch and loads the run
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:
                    if answer.read() == b"ok":
                        break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"cnnkit serve exited: {process.stdout.read().decode()}")
                time.sleep(0.1)
        else:
            pytest.fail("cnnkit serve did not answer /health within 30 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "Chromium or chromedriver is absent (Debian: apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1100,900"):  # fmt: skip
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _upload(browser, url, path):
    from selenium.webdriver.common.by import By

    browser.get(url)
    browser.find_element(By.ID, "image").send_keys(str(path))
    browser.find_element(By.ID, "submit").click()


def test_in_chromium_an_upload_shows_the_class_and_a_corrupt_file_its_message(
    server, browser, run, folder, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    sample = folder / "Sneaker" / "000.png"
    _upload(browser, server, sample)
    result = wait.until(EC.presence_of_element_located((By.ID, "result")))
    assert result.text == f"predicted: {_expected_class(run, sample)}"
    assert len(browser.find_elements(By.CLASS_NAME, "bar")) == len(CLASSES)
    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot))
    assert Image.open(shot).size[0] > 0
    if os.environ.get("CNNKIT_SCREENSHOT"):  # for the README: CNNKIT_SCREENSHOT=docs/serve.png
        shutil.copy(shot, os.environ["CNNKIT_SCREENSHOT"])

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(sample.read_bytes()[:60])  # a PNG cut short
    _upload(browser, server, corrupt)
    message = wait.until(EC.presence_of_element_located((By.ID, "error")))
    assert message.text.startswith("corrupt.png: the image is corrupt or truncated")

    _upload(browser, server, sample)  # the server still serves
    assert wait.until(EC.presence_of_element_located((By.ID, "result"))).text.startswith(
        "predicted:"
    )
