"""Keras's JAX backend: both stages and the evaluators run under KERAS_BACKEND=jax, and a .h5 saved
on either backend evaluates the same on the other (--resume on JAX: tests/test_distributed.py). A process has one
backend, so every run here is a subprocess with its backend set explicitly. All but the refusals
are slow-marked: JAX compiles every model afresh, so each run takes 30 s or more here."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import run_script

from tinynet.data import load_dataset, preprocess_data

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
                        "--epochs", "2", "--unfreeze", "Conv_1", "--learning-rate", "1e-3", "--batch-size", "16",
                        "--skip-from", "1.01")  # stage 1 is perfect on these colours: fine-tune all the same
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
def test_models_saved_on_either_backend_evaluate_the_same_on_the_other(jax_base, jax_finetuned, tiny_base,
                                                                      tiny_tree, tmp_path):
    """megaTest on JAX over two models saved on JAX and one saved on TensorFlow (tiny_base), against
    model.evaluate() here, on TensorFlow, for each: the same accuracy and loss both ways."""
    models = [jax_base[0], jax_finetuned[0], tiny_base]
    path = tmp_path / "mega.json"
    on_backend("jax", "megaTest.py", "--models", *map(str, models), "--json", str(path), "--report",
               str(path.with_suffix(".html")))
    data = load_dataset(str(tiny_tree), 32)
    x, y = preprocess_data(data.parts["test"].images, data.parts["test"].labels, 3)
    for row, model in zip(json.loads(path.read_text())["models"], models, strict=True):
        loss, accuracy = keras.models.load_model(model).evaluate(x, y, batch_size=128, verbose=0)
        assert row["accuracy"] == pytest.approx(accuracy, abs=1e-6)
        assert row["loss"] == pytest.approx(loss, rel=1e-4)
        assert row["images_per_s"] > 0 and row["latency_ms"] > 0


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
