"""The model: raw uint8 in, frozen base, cached features equal to the end-to-end path, clean .h5 round trip."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import class_images, run_script

from tinynet.data import one_hot, preprocess_data
from tinynet.errors import UserError
from tinynet.features import extract_features
from tinynet.linear_head import one_standard_error
from tinynet.model import build_model, check_cached_head_matches, feature_extractor, unfreeze
from tinynet.optimizers import FusedAdam, LayerwiseAdam, compile_model, depth_rates
from tinynet.runfiles import save_model, write_sidecar


@pytest.fixture(scope="module")
def model(weights):
    keras.utils.set_random_seed(0)
    return build_model(3, image_size=64, alpha=0.35, weights=weights, head="blocks")


@pytest.fixture(scope="module")
def images():
    return np.concatenate([class_images(k, 8) for k in range(3)])


def test_only_the_classifier_trains(model):
    trainable_owners = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable_owners == {"classifier"}
    assert model.get_layer("mobilenetv2").trainable is False
    assert model.input.dtype == "uint8"


def test_the_default_head_reads_blocks_13_and_16_and_the_base_ends_there(model):
    base = model.get_layer("mobilenetv2")
    names = [layer.name for layer in base.layers]
    assert len(base.outputs) == 2 and names[-1] == "block_16_project_BN" and "block_13_expand_relu" in names
    assert "Conv_1" not in names
    with pytest.raises(UserError, match="Conv_1 is not in this model's MobileNetV2, which ends at block_16_project_BN"):
        unfreeze(model, "Conv_1")
    assert base.trainable is False, "a refused unfreeze must change nothing"


def test_cached_features_and_end_to_end_give_the_same_predictions(model, images):
    classifier = model.get_layer("classifier")
    rng = np.random.default_rng(1)
    for weight in classifier.trainable_weights:  # not BatchNormalization's moving statistics
        weight.assign(weight + rng.normal(0, 0.05, weight.shape))
    features = extract_features(feature_extractor(model), images, batch_size=10)
    from_features = classifier.predict(features, verbose=0)
    from_images = model.predict(images, batch_size=7, verbose=0)
    assert from_images.std(0).max() > 1e-3, "predictions must depend on the image for this test to mean anything"
    np.testing.assert_allclose(from_images, from_features, atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="counts tf.function's traces")
def test_the_forward_pass_is_traced_once_though_its_last_batch_is_short(model, images):
    extractor = feature_extractor(model)
    features = extract_features(extractor, images, batch_size=10)  # 24 images: 10, 10, then 4
    assert extractor.predict_function.experimental_get_tracing_count() == 1
    np.testing.assert_array_equal(features[20:], extractor.predict_on_batch(images[20:]))


def test_the_assembled_model_is_checked_against_the_head_on_cached_features(model, images):
    classifier = model.get_layer("classifier")
    features = extract_features(feature_extractor(model), images, batch_size=10)
    check_cached_head_matches(model, classifier, images, features)  # eager calls against the pass's graph
    other = keras.models.clone_model(classifier)
    other.set_weights([2 * w for w in classifier.get_weights()])
    with pytest.raises(RuntimeError, match="disagrees with the head"):
        check_cached_head_matches(model, other, images, features)


def test_calling_the_model_predicts_what_predict_does(model, images):
    # Keras's Resizing rounds uint8 images in eager calls only; the model must not depend on how it runs
    eager = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_allclose(eager, model.predict(images, verbose=0), atol=1e-5)


@pytest.mark.parametrize("head", ["linear", "original"])
def test_every_head_has_a_cacheable_front(head, weights, images):
    model = build_model(3, image_size=64, alpha=0.35, weights=weights, head=head)
    features = feature_extractor(model).predict(images[:4], verbose=0)
    np.testing.assert_allclose(model.get_layer("classifier").predict(features, verbose=0),
                               model.predict(images[:4], verbose=0), atol=1e-5)


def test_preprocess_data_keeps_the_original_contract():
    x = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3)).astype(np.uint8)
    for y in (np.array([0, 3, 9, 1, 2]), np.array([[0], [3], [9], [1], [2]])):
        x_p, y_p = preprocess_data(x, y)
        assert x_p.dtype == np.uint8 and x_p.shape == (5, 32, 32, 3)
        np.testing.assert_array_equal(y_p.argmax(1), y.ravel())
        assert y_p.shape == (5, 10) and y_p.sum() == 5


def test_saved_model_reloads_in_a_fresh_process_compiled_and_identical(model, images, tmp_path):
    compile_model(model, 1e-3, for_saving=True)
    path = tmp_path / "model.h5"
    save_model(model, path)
    write_sidecar(path, {"stage": "test"})
    assert json.loads(path.with_suffix(".json").read_text()) == {"stage": "test"}
    assert not list(tmp_path.glob(".*partial*")), "no temporary file may stay behind"
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", np.repeat(np.arange(3), 8))
    expected = model.predict(images, verbose=0)
    code = f"""
import json, keras, numpy as np
from lilTinyNet import preprocess_data
model = keras.models.load_model({str(path)!r})
x, y = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'y.npy')!r})
loss, accuracy = model.evaluate(*preprocess_data(x, y, 3), verbose=0)
np.save({str(tmp_path / 'p.npy')!r}, model.predict(x, verbose=0))
print(json.dumps({{"compiled": model.compiled, "loss": loss, "accuracy": accuracy}}))
"""
    result = run_script("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    reloaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert reloaded["compiled"] is True
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-6)
    loss, accuracy = model.evaluate(*preprocess_data(images, np.repeat(np.arange(3), 8), 3), verbose=0)
    assert reloaded["accuracy"] == pytest.approx(accuracy) and reloaded["loss"] == pytest.approx(loss, rel=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="FusedAdam is TensorFlow's kernel")
def test_fused_adam_takes_the_steps_keras_adam_takes():
    x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    y = one_hot(np.arange(32) % 4, 4)
    weights = []
    for optimizer in (keras.optimizers.Adam, FusedAdam):
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="softmax")])
        initial = net.get_weights()
        net.compile(optimizer=optimizer(keras.optimizers.schedules.CosineDecay(1e-2, 8)),
                    loss="categorical_crossentropy")
        net.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)  # 8 steps, bias correction included
        weights.append(net.get_weights())
    assert not np.allclose(weights[0][0], initial[0], atol=1e-3), "Adam must have moved the weights"
    for keras_adam, fused in zip(*weights, strict=True):
        np.testing.assert_allclose(fused, keras_adam, atol=1e-6)


@pytest.mark.parametrize("optimizer", [LayerwiseAdam, FusedAdam])
def test_layer_wise_rates_scale_each_weights_steps(optimizer):
    """A multiplier of 0 holds a weight still, 1 leaves Adam's step as it is, and between them the
    step shrinks: with the same gradients, Adam's first step is the rate times the sign."""
    x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    y = one_hot(np.arange(16) % 4, 4)
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="low"),
                            keras.layers.Dense(4, activation="softmax", name="top")])
    low, top = net.get_layer("low"), net.get_layer("top")
    initial = net.get_weights()
    scales = {low.kernel.path: 0.0, low.bias.path: 0.25}
    net.compile(optimizer=optimizer(1e-2, multipliers=scales), loss="categorical_crossentropy")
    net.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)  # one step
    moved = [np.abs(after - before).max() for after, before in zip(net.get_weights(), initial, strict=True)]
    assert moved[0] == 0, "multiplier 0: frozen"
    np.testing.assert_allclose(moved[1], 0.25e-2, rtol=1e-3)
    np.testing.assert_allclose([moved[2], moved[3]], 1e-2, rtol=1e-3)
    assert low.kernel.path not in {w.path for w in top.weights}


def test_depth_rates_fall_by_block_from_the_top(model):
    rates = depth_rates(model, 0.5)
    base = model.get_layer("mobilenetv2")
    by_layer = {layer.name: rates[layer.weights[0].path] for layer in base.layers
                if layer.weights and layer.weights[0].path in rates}
    assert by_layer["block_16_project"] == 0.25 and by_layer["block_15_expand"] == 0.125
    assert by_layer["block_1_expand"] == 0.5**17 and by_layer["Conv1"] == 0.5**19
    assert not any("classifier" in path for path in rates), "the head keeps the full rate"
    assert depth_rates(model, 1.0) == {}


@pytest.mark.parametrize("optimizer", [LayerwiseAdam, FusedAdam])
def test_l2_sp_pulls_each_weight_back_toward_where_it_started(optimizer):
    """Adam's first step moves a weight by the rate; the pull then takes back anchor * rate of
    that way, and over many steps the weights stay nearer their start than without it."""
    x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    y = one_hot(np.arange(16) % 4, 4)
    moved = {}
    for anchor, epochs in ((10.0, 1), (0.0, 30), (10.0, 30)):
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="softmax")])
        initial = net.get_weights()
        net.compile(optimizer=optimizer(1e-2, anchor=anchor), loss="categorical_crossentropy")
        net.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
        moved[anchor, epochs] = np.abs(net.get_weights()[0] - initial[0]).max()
    np.testing.assert_allclose(moved[10.0, 1], 1e-2 * (1 - 1e-2 * 10), rtol=1e-3)
    assert moved[10.0, 30] < 0.8 * moved[0.0, 30]


def test_label_smoothing_is_the_training_loss_and_a_saved_model_compiles_without_it():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="softmax")])
    compile_model(model, 1e-3, label_smoothing=0.1)
    assert model.loss.get_config()["label_smoothing"] == 0.1
    compile_model(model, 1e-3, for_saving=True)
    assert model.loss == "categorical_crossentropy"


def test_the_penalty_rule_wants_more_than_one_images_worth_of_loss_before_it_keeps_a_weaker_penalty():
    def rows(losses: dict[float, tuple[float, float]]) -> list[dict]:
        return [{"penalty": penalty, "val_loss": loss, "val_loss_error": error}
                for penalty, (loss, error) in losses.items()]

    # Every validation image right: the loss falls toward the weakest penalty, with next to no spread.
    separated = rows({0.01: (0.004, 0.001), 0.1: (0.02, 0.004), 1.0: (0.2, 0.02)})
    assert one_standard_error(separated, "val_loss", 40)["penalty"] == 0.1  # 0.02 is within 1/40 of 0.004
    assert one_standard_error(separated, "val_loss", 1000)["penalty"] == 0.01
    # A noisy loss: its standard error is the margin.
    noisy = rows({0.01: (0.30, 0.05), 0.1: (0.34, 0.06), 1.0: (0.40, 0.07)})
    assert one_standard_error(noisy, "val_loss", 40)["penalty"] == 0.1
