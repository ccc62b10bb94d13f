"""Keras's JAX backend: both stages, the evaluators and --resume run under KERAS_BACKEND=jax, and a
.h5 saved on either backend loads on the other with the same predictions. A process has one
backend, so every run here is a subprocess with its backend set explicitly. The runs of the
scripts are slow-marked: the default suite keeps the cross-backend files and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_script
from test_reliability import kill_when, predictions, start

pytest.importorskip("jax")


def on_backend(backend: str, *args: str) -> object:
    """run_script in a process on the given Keras backend."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_BACKEND", backend)
        result = run_script(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def sidecar(path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def jax_base(tiny_tree, weights, tmp_path_factory):
    """lilTinyNet.py on JAX with the default head for a small set: the linear head, fitted per penalty."""
    output = tmp_path_factory.mktemp("jax") / "cifar10_lilTinyNet.h5"
    result = on_backend("jax", "lilTinyNet.py", "--data-dir", str(tiny_tree), "--alpha", "0.35", "--weights",
                        weights, "--image-size", "32", "--output", str(output))
    return output, result


@pytest.fixture(scope="module")
def jax_finetuned(jax_base):
    output = jax_base[0].with_name("cifar10_finetuned_lilTinyNet.h5")
    result = on_backend("jax", "lilTinyNet_finetuner.py", "--base", str(jax_base[0]), "--output", str(output),
                        "--epochs", "2", "--unfreeze", "Conv_1", "--learning-rate", "1e-3", "--batch-size", "16")
    return output, result


@pytest.mark.slow  # JAX compiles every model afresh: each run takes 30 to 40 s here
def test_both_stages_run_on_jax_and_record_it(jax_base, jax_finetuned):
    for path, result in (jax_base, jax_finetuned):
        assert "Keras backend jax" in result.stdout.splitlines()[0]
        info = sidecar(path)
        assert info["versions"]["backend"] == "jax" and info["versions"]["jax"]
        assert info["metrics"]["test"]["accuracy"] > 0.9, "the classes are told apart by their colour"
    history = sidecar(jax_finetuned[0])["history"]
    assert len(history) == 2 and all(np.isfinite(row["loss"]) for row in history)


@pytest.mark.slow  # JAX compiles every model afresh: each run takes 30 to 40 s here
def test_megatest_on_jax_reports_what_model_evaluate_gives(jax_base, jax_finetuned, tiny_tree, tmp_path):
    models = [str(jax_base[0]), str(jax_finetuned[0])]
    path = tmp_path / "mega.json"
    on_backend("jax", "megaTest.py", "--models", *models, "--json", str(path))
    code = f"""
import json, keras
from lilTinyNet import preprocess_data
from tinynet.data import load_dataset
data = load_dataset({str(tiny_tree)!r}, 32)
x, y = preprocess_data(data.parts["test"].images, data.parts["test"].labels, 3)
print(json.dumps([keras.models.load_model(m).evaluate(x, y, batch_size=128, verbose=0) for m in {models!r}]))
"""
    direct = on_backend("jax", "-c", code)
    rows = json.loads(path.read_text())["models"]
    for row, (loss, accuracy) in zip(rows, json.loads(direct.stdout.strip().splitlines()[-1]), strict=True):
        assert row["accuracy"] == pytest.approx(accuracy, abs=1e-6)
        assert row["loss"] == pytest.approx(loss, rel=1e-4)
        assert row["images_per_s"] > 0 and row["latency_ms"] > 0


# Saves a tiny model, compiled as the scripts save theirs, and its predictions.
SAVE = """
import sys, numpy as np, keras
from tinynet.model import build_model, compile_model
from tinynet.runfiles import save_model
weights, out = sys.argv[1], sys.argv[2]
keras.utils.set_random_seed(0)
images = np.random.default_rng(0).integers(0, 256, (8, 40, 40, 3), dtype=np.uint8)
model = build_model(3, 32, 0.35, weights, "gap")
compile_model(model, 1e-3, for_saving=True)
save_model(model, out)
np.save(out + ".npy", model.predict(images, verbose=0))
"""

# Loads it on the other backend and predicts the same images.
LOAD = """
import sys, numpy as np, keras
out = sys.argv[1]
images = np.random.default_rng(0).integers(0, 256, (8, 40, 40, 3), dtype=np.uint8)
np.save(out + ".loaded.npy", keras.models.load_model(out).predict(images, verbose=0))
"""


@pytest.mark.parametrize(("saved_on", "loaded_on"), [("tensorflow", "jax"), ("jax", "tensorflow")])
def test_an_h5_saved_on_one_backend_predicts_the_same_on_the_other(saved_on, loaded_on, weights, tmp_path):
    out = str(tmp_path / f"on_{saved_on}.h5")
    on_backend(saved_on, "-c", SAVE, weights, out)
    on_backend(loaded_on, "-c", LOAD, out)
    saved, loaded = np.load(out + ".npy"), np.load(out + ".loaded.npy")
    assert saved.shape == (8, 3)
    np.testing.assert_allclose(loaded, saved, atol=1e-5)


@pytest.mark.slow
def test_resume_on_jax_ends_where_an_uninterrupted_run_ends(jax_base, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")  # for start() and run_script(), which inherit it
    flags = ["lilTinyNet_finetuner.py", "--base", str(jax_base[0]), "--epochs", "4", "--unfreeze", "Conv_1",
             "--learning-rate", "1e-3", "--batch-size", "64"]  # one step an epoch: the test is about epochs
    whole, resumed = tmp_path / "whole.h5", tmp_path / "resumed.h5"
    assert run_script(*flags, "--output", str(whole)).returncode == 0
    state = resumed.with_suffix(".state") / "state.json"
    process = start(*flags, "--output", str(resumed))
    kill_when(process, lambda: state.exists() and len(json.loads(state.read_text())["rows"]) >= 2)
    finished = run_script(*flags, "--output", str(resumed), "--resume")
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "resuming after epoch 2" in finished.stdout
    keys = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
    for row_a, row_b in zip(sidecar(whole)["history"], sidecar(resumed)["history"], strict=True):
        for key in keys:
            assert row_a[key] == pytest.approx(row_b[key], rel=1e-4, abs=1e-5), key
    images = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(predictions(whole, images), predictions(resumed, images), atol=1e-5)


@pytest.mark.parametrize("command", [
    ["lilTinyNet.py", "--strategy", "mirrored"],
    ["export.py", "--format", "tflite"],
], ids=["mirrored", "export"])
def test_tensorflow_only_features_are_one_line_on_jax(command, tmp_path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_BACKEND", "jax")
        result = run_script(*command, "--output", str(tmp_path / "m.h5"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-3000:]
    assert "TensorFlow" in result.stderr and "jax" in result.stderr
