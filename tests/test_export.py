"""export.py: every format is written only after it matches the Keras model in its own runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import ROOT, run_main

from tinynet import export, formats
from tinynet.errors import UserError


@pytest.fixture(scope="module")
def exported(tiny_base, tmp_path_factory):
    stem = tmp_path_factory.mktemp("exports") / "tiny"
    checks = export.main(["--model", str(tiny_base), "--format", *formats.FORMATS, "--output", str(stem)])
    return stem, checks


def test_every_format_is_written_with_its_check(exported):
    stem, checks = exported
    assert [c["format"] for c in checks] == list(formats.FORMATS)
    for check in checks:
        path = formats.export_path(stem, check["format"])
        assert path.exists() and check["passed"], check
        assert json.loads((path.parent / f"{path.name}.check.json").read_text()) == check
        assert check["images"] == 15, "the whole (tiny) test set"
    assert not list(stem.parent.glob(".partial*")), "no temporary export is left behind"


def test_float_exports_match_keras_and_int8_is_smaller(exported, tiny_base):
    stem, checks = exported
    by_format = {c["format"]: c for c in checks}
    for fmt in ("savedmodel", "tflite", "onnx", "openvino"):
        assert by_format[fmt]["top_class_agreement"] == 1.0
        assert by_format[fmt]["max_probability_difference"] <= 1e-4
    assert by_format["tflite-int8"]["accuracy"] >= by_format["tflite-int8"]["keras_accuracy"] - 0.01
    int8 = formats.export_path(stem, "tflite-int8").stat().st_size
    assert int8 < formats.export_path(stem, "tflite").stat().st_size / 2
    assert int8 < tiny_base.stat().st_size / 2


def test_a_mirrored_export_averages_each_image_with_its_mirror_image(tiny_base, tmp_path, capsys):
    base = tmp_path / tiny_base.name
    for path in (tiny_base, tiny_base.with_suffix(".json")):
        shutil.copy(path, tmp_path)
    checks = export.main(["--model", str(base), "--format", "tflite", "--mirror"])
    path = tmp_path / f"{base.stem}_mirror.tflite"
    assert checks[0]["passed"] and checks[0]["path"] == str(path)
    assert "mirrored: test accuracy" in capsys.readouterr().out, "the accuracy alone and mirrored, to choose by"
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    model = keras.models.load_model(base)
    expected = (model.predict(images, verbose=0) + model.predict(images[:, :, ::-1], verbose=0)) / 2
    assert np.abs(model.predict(images, verbose=0) - expected).max() > 1e-3, "the mirror must change something"
    np.testing.assert_allclose(formats.load_runner("tflite", path)(images), expected, atol=1e-5)


def test_int8_is_judged_with_the_test_sets_size_in_mind():
    """A small test set cannot tell 3 lost images of 200 from chance; 12 lost and 2 gained it can."""
    labels = np.zeros(200, int)

    def int8_check(lost: int, gained: int) -> dict:
        keras_right = np.r_[np.ones(lost, bool), np.zeros(gained, bool), np.ones(100, bool)]
        right = np.r_[np.zeros(lost, bool), np.ones(gained, bool), np.ones(100, bool)]
        keras_right, right = (np.r_[r, np.zeros(200 - len(r), bool)] for r in (keras_right, right))
        as_probabilities = lambda correct: np.eye(3)[np.where(correct, 0, 1)]  # noqa: E731
        return formats.compare("tflite-int8", as_probabilities(right), as_probabilities(keras_right), labels)

    small = int8_check(3, 0)
    assert small["passed"] and small["accuracy"] == small["keras_accuracy"] - 0.015
    assert (small["images_lost"], small["images_gained"], small["chance_of_such_a_loss"]) == (3, 0, 0.125)
    worse = int8_check(12, 2)
    assert not worse["passed"] and worse["chance_of_such_a_loss"] < 0.01
    assert int8_check(2, 0)["passed"], "a point is allowed whatever the set's size"
    assert "McNemar" in worse["criterion"]


def test_an_export_runs_in_a_fresh_process_without_tensorflow_or_keras(exported):
    """A phone or server has only the runtime: the .tflite file runs in ai_edge_litert alone."""
    stem, _ = exported
    code = f"""
import sys, numpy as np
sys.modules["tensorflow"] = sys.modules["keras"] = None  # importing either now fails
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path={str(formats.export_path(stem, "tflite"))!r})
interpreter.allocate_tensors()
source = interpreter.get_input_details()[0]
interpreter.set_tensor(source["index"], np.zeros(source["shape"], np.uint8))
interpreter.invoke()
print(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).sum())
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.split()[-1]) == pytest.approx(1.0, abs=1e-5), "probabilities sum to 1"


@pytest.mark.slow
def test_a_failed_check_writes_nothing(tiny_base, tmp_path, monkeypatch):
    """An export that disagrees with Keras is removed, not reported written, and the run fails."""
    monkeypatch.setattr(formats, "run_in_batches", lambda run, images: np.full((len(images), 3), 1 / 3))
    with pytest.raises(UserError, match="savedmodel did not match the Keras model"):  # the quickest to write
        export.main(["--model", str(tiny_base), "--format", "savedmodel", "--output", str(tmp_path / "bad")])
    assert list(tmp_path.iterdir()) == []


def test_a_missing_runtime_is_one_line_naming_the_package(tiny_base, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # importing it now fails, as when it is not installed
    assert run_main(export.main, "--model", str(tiny_base), "--format", "onnx", "--output", str(tmp_path / "x")) == 2
    assert capsys.readouterr().err == (
        "error: --format onnx needs the package onnxruntime: pip install -r requirements-export.txt\n")


def test_help_lists_the_formats(capsys):
    assert run_main(export.main, "--help") == 0
    out = capsys.readouterr().out
    assert all(fmt in out for fmt in formats.FORMATS)


@pytest.mark.slow
def test_int8_falls_back_to_dynamic_range_when_full_integer_loses_accuracy(tiny_base, tmp_path, monkeypatch):
    """Full-integer int8 is tried first; when it fails its check, int8 weights with activations
    quantized at run time are written instead, and the check says which."""
    compare, seen = formats.compare, []

    def full_integer_fails(fmt, *args):
        check = compare(fmt, *args)
        check["passed"] = check["passed"] and bool(seen)
        seen.append(check)
        return check

    monkeypatch.setattr(formats, "compare", full_integer_fails)
    [check] = export.main(["--model", str(tiny_base), "--format", "tflite-int8", "--output", str(tmp_path / "q")])
    assert [c["quantization"] for c in seen] == ["full integer, calibrated on training images",
                                                 "int8 weights, activations quantized at run time (dynamic range)"]
    assert check["passed"] and json.loads((tmp_path / "q_int8.tflite.check.json").read_text()) == check
