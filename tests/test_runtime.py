"""The passes that train nothing on LiteRT: the same answers as TensorFlow, or TensorFlow with a reason."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import class_images, run_script

from tinynet import runtime
from tinynet.model import feature_extractor


@pytest.fixture(scope="module")
def model(tiny_base):
    return keras.models.load_model(tiny_base)


@pytest.fixture(scope="module")
def images():
    return np.concatenate([class_images(k, 6) for k in range(3)])


def test_litert_gives_tensorflows_features_and_probabilities(model, images, capsys):
    for net in (model, feature_extractor(model)):
        forward = runtime.runner(net, images[:8], len(images), "litert")
        assert forward.name == "litert", capsys.readouterr().out
        expected = net.predict(images, verbose=0)
        got = forward(images)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= runtime.TOLERANCE * np.abs(expected).max()
        if net is model:
            assert np.array_equal(got.argmax(1), expected.argmax(1)), "the same class for every image"
    assert runtime.is_cached(model, images.shape[1:]), "converted once, then read from the cache"


def test_answers_that_differ_send_the_pass_to_tensorflow_with_one_line(model, images, monkeypatch, capsys):
    def wrong(net, shape):  # a conversion whose answers are not the model's
        return runtime.Runner("litert", lambda batch: -np.asarray(net(batch)))

    monkeypatch.setattr(runtime, "litert_runner", wrong)
    forward = runtime.runner(model, images[:8], len(images), "litert")
    assert forward.name == "tensorflow"
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "--runtime litert cannot be used: LiteRT chose other classes" in out
    np.testing.assert_allclose(forward(images), model.predict(images, verbose=0), atol=1e-6)


def test_a_conversion_that_cannot_pay_back_on_a_small_pass_is_not_made(tiny_base, images, capsys):
    fresh = keras.models.load_model(tiny_base)
    fresh.get_layer("classifier").weights[0].assign(fresh.get_layer("classifier").weights[0] * 1.5)  # not cached
    forward = runtime.runner(fresh, images[:8], len(images), "auto")
    assert forward.name == "tensorflow"
    assert "would take longer than it saves on 18 images" in capsys.readouterr().out
    assert runtime.runner(fresh, images[:8], len(images), "tensorflow").reason == ""


def test_stage_one_on_litert_features_trains_the_model_tensorflow_does(tiny_tree, weights, tmp_path):
    """The linear head fitted on LiteRT's features and on TensorFlow's: the same metrics, and the
    saved model is the same Keras model either way."""
    infos = {}
    for choice in ("tensorflow", "litert"):
        output = tmp_path / f"{choice}.h5"
        result = run_script("lilTinyNet.py", "--data-dir", str(tiny_tree), "--alpha", "0.35", "--weights", weights,
                            "--image-size", "32", "--runtime", choice, "--output", str(output))
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"on {choice}" in result.stdout
        infos[choice] = json.loads(output.with_suffix(".json").read_text())
    assert infos["litert"]["runtime"] == "litert" and infos["tensorflow"]["runtime"] == "tensorflow"
    for split in ("val", "test"):
        for metric in ("accuracy", "loss"):
            assert infos["litert"]["metrics"][split][metric] == pytest.approx(
                infos["tensorflow"]["metrics"][split][metric], abs=1e-3)
    assert infos["litert"]["penalty"] == infos["tensorflow"]["penalty"]
