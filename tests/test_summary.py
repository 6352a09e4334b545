"""``cnnkit summary``: the Keras-style table, its totals, the JSON report and its errors."""

from __future__ import annotations

import json

from cnnkit.cli import main


def test_summary_prints_the_keras_totals_of_the_notes_cnn(capsys):
    # The notes' Fashion-MNIST CNN has 1,413,834 parameters as Keras' model.summary() counts them.
    assert main(["summary", "fashion_cnn", "--batch", "4", "--no-suggestions"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 1,413,834" in out
    assert "Trainable params: 1,413,834" in out
    assert "features.0.0 (Conv2d)" in out and "[4, 64, 28, 28]" in out
    assert "Predicted peak of the step" in out


def test_summary_lists_lenet5s_trainable_parameters_per_layer(capsys):
    # LeCun et al. 1998: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164 trainable parameters.
    assert main(["summary", "lenet5", "--inference", "--no-suggestions"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    for name, count in [("c1", "156"), ("s2", "12"), ("c3", "1,516"), ("c5", "48,120")]:
        assert f" {count} " in rows[name]


def test_summary_json_is_the_report(capsys):
    argv = ["summary", "fashion_cnn", "--batch", "8", "--optimizer", "adam", "--json"]
    assert main([*argv, "--no-suggestions"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["batch_size"] == 8 and report["optimizer"] == "adam"
    assert report["optimizer_bytes"] == 2 * report["param_bytes"]  # Adam: exp_avg, exp_avg_sq
    assert report["peak_bytes"] > report["param_bytes"] + report["activation_bytes"]


def test_summary_reports_the_models_error_for_an_input_it_rejects(capsys):
    assert main(["summary", "fashion_cnn", "--input", "1,32,32", "--no-suggestions"]) == 2
    err = capsys.readouterr().err
    assert "fashion_cnn rejects input [1, 32, 32]" in err
    assert "mat1 and mat2 shapes cannot be multiplied" in err


def test_summary_rejects_a_malformed_input_shape(capsys):
    assert main(["summary", "fashion_cnn", "--input", "28x28"]) == 2
    assert "--input: expected C,H,W" in capsys.readouterr().err
