"""Bad input gets one named line on stderr (exit status 2), never a traceback nor a silent wrong
run: each case of issue 14's list, for every command it concerns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.cli import main


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """``cnnkit ARGV``'s exit status and its stderr (argparse's own errors exit through SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _folder(root, counts: dict[str, int]):
    """An ImageFolder tree: ``counts[class]`` 8x8 PNGs per class, each a different grey."""
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def no_accelerators(monkeypatch):
    """A machine with neither CUDA nor MPS, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def data_must_not_load(monkeypatch):
    """Fails the test if a command reaches its data (or, for finetune, its pretrained weights):
    a check that regressed must fail fast, not load Fashion-MNIST at 224x224 (8 GB)."""
    import cnnkit.data.datasets
    import cnnkit.pretrained

    def refuse(*args, **kwargs):
        raise AssertionError("the command loaded data before checking its options")

    monkeypatch.setattr(cnnkit.data.datasets, "load_data", refuse)
    monkeypatch.setattr(cnnkit.pretrained, "load", refuse)


# ---- options that would train on something else than asked -------------------------------------


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_train_limit_must_be_positive(limit, capsys):
    # before: 0 and -5 trained on 55,000 and 54,995 images (tensor[:0] is empty, [:-5] is not)
    code, err = _run(["train", "--model", "fashion_cnn", "--train-limit", limit], capsys)
    assert code == 2
    assert f"argument --train-limit: expected a positive integer, got '{limit}'" in err


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_lr_nan_is_refused_naming_lr(command, data_must_not_load, capsys):
    model = "fashion_cnn" if command == "train" else "efficientnet_lite0"
    code, err = _run([command, "--model", model, "--lr", "nan"], capsys)
    assert code == 2 and "argument --lr: expected a positive finite number, got 'nan'" in err


@pytest.mark.parametrize(
    ("option", "value"), [("--lr-factor", "nan"), ("--lr-factor", "-1"), ("--jitter", "nan")]
)
def test_finetune_refuses_non_finite_phase_options(option, value, data_must_not_load, capsys):
    code, err = _run(["finetune", "--model", "efficientnet_lite0", option, value], capsys)
    assert code == 2 and f"argument {option}: expected" in err and repr(value) in err


def test_finetune_refuses_a_one_class_folder(tmp_path, capsys):
    # before the check: exit 0 with "test accuracy 1.0000"
    data = _folder(tmp_path / "data", {"cat": 4})
    argv = ["finetune", "--model", "efficientnet_lite0", "--data", str(data)]
    code, err = _run([*argv, "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    assert f"{data}: found 1 class (cat); classification needs at least two" in err
    assert not (tmp_path / "run").exists()


# ---- devices ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda", "device 'cuda': this machine has no CUDA GPU; use cpu or auto"),
        ("cuda:1", "device 'cuda:1': this machine has no CUDA GPU; use cpu or auto"),
        ("mps", "device 'mps': MPS is not available here; use cpu or auto"),
        ("tpu", "device 'tpu': not a device name; expected auto, cpu, cuda, cuda:N or mps"),
    ],
)
@pytest.mark.parametrize("command", ["train", "finetune"])
def test_an_absent_device_is_one_line_before_any_data_loads(
    command, device, message, no_accelerators, data_must_not_load, tmp_path, capsys
):
    model = "fashion_cnn" if command == "train" else "efficientnet_lite0"
    argv = [command, "--model", model, "--device", device, "--out", str(tmp_path / "run")]
    code, err = _run(argv, capsys)
    assert code == 2 and err == f"cnnkit {command}: error: {message}\n"
    assert not (tmp_path / "run").exists()


def test_evaluate_checks_its_device_before_reading_the_run(no_accelerators, tmp_path, capsys):
    code, err = _run(["evaluate", str(tmp_path / "no-run"), "--device", "cuda"], capsys)
    assert code == 2
    assert (
        err
        == "cnnkit evaluate: error: device 'cuda': this machine has no CUDA GPU; use cpu or auto\n"
    )


# ---- models and input sizes ---------------------------------------------------------------------


@pytest.mark.parametrize("batch", ["128", "auto"])
def test_a_model_below_its_minimum_size_is_refused_before_the_run_directory(
    batch, tmp_path, capsys
):
    out = tmp_path / "run"
    argv = ["train", "--model", "alexnet", "--batch-size", batch, "--out", str(out)]
    code, err = _run(argv, capsys)
    assert code == 2
    assert (
        "--model alexnet takes images of at least 67x67; fashion-mnist is 28x28: "
        "pass --image-size 67 (or larger)" in err
    )
    assert not out.exists()


# ---- run directories ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "problem"),
    [("[1, 2]", "expected a JSON object, got list"), ('{"model": {}}', "field 'data' is missing")],
)
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_malformed_config_json_names_the_file_and_the_field(
    command, config, problem, tmp_path, capsys
):
    (tmp_path / "config.json").write_text(config)
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    argv = [command, str(tmp_path)] + (
        [str(tmp_path / "image.png")] if command == "predict" else []
    )
    code, err = _run(argv, capsys)
    assert code == 2 and err == f"cnnkit {command}: error: {tmp_path / 'config.json'}: {problem}\n"


# ---- files given as options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "found"),
    [
        ("notes.txt", b"hello", "found a file starting with b'hello'"),
        ("model.pth", b"", "found an empty file"),
        ("model.bin", b"GIF89a......", "found a file starting with b'GIF89a..'"),
    ],
)
def test_weights_that_are_no_checkpoint_are_named(name, content, found, tmp_path, capsys):
    # before: "cannot be read as a PyTorch state dict with weights_only=True (101)"
    (tmp_path / name).write_bytes(content)
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    argv = ["predict", "--model", "efficientnet_lite0", "--weights", str(tmp_path / name)]
    code, err = _run([*argv, str(tmp_path / "image.png")], capsys)
    assert code == 2
    assert (
        f"{tmp_path / name}: not a weights file: expected a .safetensors file or a PyTorch" in err
    )
    assert found in err


def test_a_corrupt_safetensors_file_is_a_named_error(tmp_path, capsys):
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    argv = [
        "predict",
        "--model",
        "efficientnet_lite0",
        "--weights",
        str(tmp_path / "model.safetensors"),
    ]
    code, err = _run([*argv, str(tmp_path / "x.png")], capsys)
    assert code == 2 and f"{tmp_path / 'model.safetensors'}: not a readable safetensors file" in err


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_a_missing_data_path_says_it_does_not_exist(command, tmp_path, capsys):
    model = "fashion_cnn" if command == "train" else "efficientnet_lite0"
    missing = tmp_path / "nope"
    code, err = _run([command, "--model", model, "--data", str(missing)], capsys)
    assert code == 2 and f"--data '{missing}': does not exist" in err


# ---- splits -------------------------------------------------------------------------------------


def test_a_class_too_small_for_the_split_names_split_and_the_class(tmp_path, capsys):
    # before: scikit-learn's "The least populated classes in y have only 1 member ..."
    data = _folder(tmp_path / "data", {"many": 6, "rare": 1})
    argv = ["finetune", "--model", "efficientnet_lite0", "--data", str(data)]
    code, err = _run([*argv, "--split", "0.6,0.2,0.2", "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    assert err.startswith("cnnkit finetune: error: --split 0.6,0.2,0.2: ")
    assert "class 'rare' has 1 image, too few to give the test split one" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("split", ["nan,0.5,0.5", "0.5,0.5", "0.8,0.3,-0.1"])
def test_split_fractions_must_be_three_summing_to_one(split, data_must_not_load, capsys):
    code, err = _run(["finetune", "--model", "efficientnet_lite0", "--split", split], capsys)
    assert code == 2 and "--split: expected three fractions >= 0 summing to 1" in err


def test_stratified_split_names_the_class_when_the_test_split_is_too_small():
    from cnnkit.data.folder import SplitError, stratified_split

    # 10 classes x 3 images, test 0.1: ceil(0.1 * 30) = 3 test images (scikit-learn rounds up)
    # for 10 classes
    labels = [c for c in range(10) for _ in range(3)]
    names = [f"c{i}" for i in range(10)]
    with pytest.raises(
        SplitError,
        match=r"the test split gets 3 of 30 images, fewer than the 10 classes \(class 'c0' has 3 images\)",
    ):
        stratified_split(labels, (0.75, 0.15, 0.10), class_names=names)


def test_stratified_split_names_the_class_too_small_for_the_valid_split():
    from cnnkit.data.folder import SplitError, stratified_split

    labels = [0] * 10 + [1]  # no test split; class 'b' has one image for train and valid
    with pytest.raises(
        SplitError, match=r"class 'b' has 1 image, too few to give the valid split one and keep one"
    ):
        stratified_split(labels, (0.8, 0.2, 0.0), class_names=["a", "b"])


# ---- safe loading -------------------------------------------------------------------------------


class _WritesAFile:
    """A pickle whose unpickling, without ``weights_only``, would write ``target``."""

    def __init__(self, target) -> None:
        self.target = target

    def __reduce__(self):
        from pathlib import Path

        return (Path.write_text, (Path(self.target), "unpickled code ran"))


def test_a_pth_whose_unpickling_writes_a_file_is_refused_and_writes_nothing(tmp_path):
    from cnnkit.pretrained.weights import read_state_dict

    target = tmp_path / "written-by-the-pickle.txt"
    torch.save({"weight": torch.zeros(1), "payload": _WritesAFile(target)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil\.pth: cannot be read .* weights_only=True"):
        read_state_dict(tmp_path / "evil.pth")
    assert not target.exists()


def test_no_code_path_extracts_archives():
    """Archives would need path-traversal and link checks (tarfile's ``filter="data"``); cnnkit
    extracts none today (IDX files are gunzipped in memory). Adding an extraction must add those
    checks and their tests, and change this test."""
    from pathlib import Path

    import cnnkit

    sources = Path(cnnkit.__file__).parent.rglob("*.py")
    extracting = [
        str(p)
        for p in sources
        if any(
            w in p.read_text()
            for w in ("extractall", "tarfile", "zipfile", "shutil.unpack_archive")
        )
    ]
    assert extracting == []


@pytest.mark.parametrize(
    ("option", "value"),
    [("--weight-decay", "nan"), ("--label-smoothing", "nan"), ("--label-smoothing", "1.5")],
)
def test_a_non_finite_or_out_of_range_fraction_names_its_option(option, value, capsys):
    from cnnkit.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "fashion_cnn", option, value, "--out", "never-made"])
    assert info.value.code == 2
    assert (
        f"argument {option}: expected a number from 0 up to 1, got '{value}'"
        in capsys.readouterr().err
    )
