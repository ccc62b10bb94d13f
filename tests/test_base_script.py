"""lilTinyNet.py end to end, as a user runs it, on a slice of the shared data and weights."""

from __future__ import annotations

import json

import pytest
from conftest import run_main, run_script

from tinynet import stage1

SIDECAR_KEYS = {"stage", "settings", "class_names", "data", "history", "metrics", "times", "versions"}


def test_writes_the_model_the_sidecar_and_a_summary(base_run):
    output, result = base_run
    info = json.loads(output.with_suffix(".json").read_text())
    assert SIDECAR_KEYS <= set(info)
    assert info["class_names"][:2] == ["airplane", "automobile"] and len(info["class_names"]) == 10
    data = info["data"]
    assert (data["train"], data["val"], data["test"]) == (800, 200, 200), "20 validation images per class"
    assert data["val_split"] == 0.2 and len(data["carved"]["val"]) == 200 and data["image_size"] == 64
    assert 1 <= len(info["history"]) <= 4 and {"loss", "val_accuracy", "learning_rate"} <= set(info["history"][0])
    assert {"features", "train", "save", "total"} <= set(info["times"])
    assert info["metrics"]["test"]["accuracy"] > 0.3, "pretrained features must beat chance (0.1) clearly"
    fitted = info["calibration"]
    assert fitted["temperature"] > 0 and fitted["val_loss_after"] <= fitted["val_loss_before"]
    assert 0 <= fitted["min_confidence"] <= 1
    assert "test accuracy" in result.stdout and str(output) in result.stdout
    assert (output.parent / "logs" / "epochs.csv").exists()
    assert not output.with_suffix(".state").exists(), "checkpoints of a finished run are cleaned up"


def test_the_original_harness_reports_the_sidecar_accuracy(base_run, shared_slice):
    output, _ = base_run
    code = f"""
import json, keras
from lilTinyNet import preprocess_data
from tinynet.data import load_dataset
data = load_dataset({str(shared_slice)!r}, 64)
model = keras.models.load_model({str(output)!r})
loss, accuracy = model.evaluate(*preprocess_data(data.parts["test"].images, data.parts["test"].labels), verbose=0)
print(json.dumps([loss, accuracy]))
"""
    result = run_script("-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    loss, accuracy = json.loads(result.stdout.strip().splitlines()[-1])
    test = json.loads(output.with_suffix(".json").read_text())["metrics"]["test"]
    assert accuracy == pytest.approx(test["accuracy"], abs=1e-6)
    assert loss == pytest.approx(test["loss"], rel=1e-4)


def test_help_lists_the_flags(capsys):
    assert run_main(stage1.main, "--help") == 0
    out = capsys.readouterr().out
    for flag in ("--data-dir", "--alpha", "--weights", "--image-size", "--epochs", "--batch-size", "--val-split",
                 "--seed", "--head", "--test-split", "--square", "--output", "--no-feature-cache", "--log-dir"):
        assert flag in out


def test_the_heads_earlier_name_still_works():
    assert stage1.parse_args(["--head", "gap"]).head == "linear"
    assert stage1.parse_args([]).head == "auto"


def test_a_missing_data_dir_is_one_line_and_exit_2(tmp_path, capsys):
    assert run_main(stage1.main, "--data-dir", str(tmp_path / "nowhere"), "--weights", "none") == 2
    assert capsys.readouterr().err == f"error: --data-dir {tmp_path / 'nowhere'} does not exist\n"
