"""lilTinyNet_finetuner.py: frozen parts stay bit-identical, BatchNormalization keeps its statistics,
augmentation touches training images only, and the output reloads cleanly."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
from conftest import run_main, run_script

from tinynet import stage1, stage2
from tinynet.batches import default_augmentation, epoch_batches
from tinynet.checkpoint import better
from tinynet.errors import UserError
from tinynet.model import first_trainable_layer
from tinynet.training import steps_per_call, train


@pytest.fixture(scope="module")
def finetuned(tiny_base, tiny_finetuned):
    return tiny_base, *tiny_finetuned


def base_layers(path):
    return {layer.name: layer for layer in keras.models.load_model(path).get_layer("mobilenetv2").layers}


def test_frozen_layers_and_batchnorm_statistics_are_bit_identical(finetuned):
    base_path, tuned_path, _ = finetuned
    before, after = base_layers(base_path), base_layers(tuned_path)
    names = list(before)
    cut = names.index("block_15_expand")
    changed = []
    for index, name in enumerate(names):
        old, new = before[name].get_weights(), after[name].get_weights()
        same = all(np.array_equal(a, b) for a, b in zip(old, new, strict=True))
        if index < cut or isinstance(before[name], keras.layers.BatchNormalization):
            assert same, f"{name} must not change: it is frozen"
        elif old:
            changed.append(not same)
    assert changed and all(changed), "every unfrozen layer with weights must have trained"


def test_sidecar_records_the_run_and_metrics_are_of_unaugmented_images(finetuned, tiny_tree):
    base_path, tuned_path, result = finetuned
    info = json.loads(tuned_path.with_suffix(".json").read_text())
    assert info["stage"] == "finetune" and info["base"] == str(base_path)
    assert info["data"]["source"] == str(tiny_tree), "the data source comes from the base's sidecar"
    assert "block_15_expand" in info["unfrozen_layers"] and "block_14_expand" not in info["unfrozen_layers"]
    assert not any("BN" in name for name in info["unfrozen_layers"])
    assert len(info["history"]) == 2 and info["history"][0]["learning_rate"] > 0
    assert info["augment"] == "crop", "images held at the input size (32 pixels here) are zoomed into, as photos"
    assert info["calibration"]["val_loss_after"] <= info["calibration"]["val_loss_before"]
    assert info["returned"] == "average of epochs 1 to 2" and not info["give_up"]["gave_up"]
    base_metrics = json.loads(base_path.with_suffix(".json").read_text())["metrics"]
    for split in ("val", "test"):  # the base is left at chance on purpose: fine-tuning has a gain to keep
        assert info["metrics"][split]["accuracy"] > base_metrics[split]["accuracy"] + 0.2, split
    assert info["peak_rate"] == 1e-3 and info["average_last"] == 2
    assert "base" in result.stdout and "fine-tuned" in result.stdout
    code = f"""
import json, keras
from tinynet.data import load_recorded, one_hot
_, splits = load_recorded(json.load(open({str(tuned_path.with_suffix(".json"))!r}))["data"])
model = keras.models.load_model({str(tuned_path)!r})
print(json.dumps({{s: model.evaluate(splits.images[s], one_hot(splits.labels[s], 3), verbose=0, return_dict=True)
                  for s in ("val", "test")}}))
"""
    fresh = run_script("-c", code)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    reloaded = json.loads(fresh.stdout.strip().splitlines()[-1])
    for split in ("val", "test"):
        assert reloaded[split]["accuracy"] == pytest.approx(info["metrics"][split]["accuracy"], abs=1e-6)
        assert reloaded[split]["loss"] == pytest.approx(info["metrics"][split]["loss"], rel=1e-4)


def test_shift_augmentation_flips_and_shifts_only_what_it_is_given():
    x = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    y = np.eye(6, dtype=np.float32)
    plain = {int(label.argmax()): image for images, labels in epoch_batches(x, y, 6, 0, 0, 1)
             for image, label in zip(images.numpy(), labels.numpy(), strict=True)}
    augmented = [(image, int(label.argmax())) for images, labels in epoch_batches(x, y, 6, 0, 0, 3, augment="shift")
                 for image, label in zip(images.numpy(), labels.numpy(), strict=True)]
    for i in range(6):
        np.testing.assert_array_equal(plain[i], x[i])
    assert len(augmented) == 18 and augmented[0][0].dtype == np.uint8
    assert sum(not np.array_equal(image, x[label]) for image, label in augmented) >= 12
    # each augmented image is a shifted, maybe mirrored, window of its own source image
    for image, label in augmented:
        source = np.pad(x[label], ((2, 2), (2, 2), (0, 0)))
        candidates = [source, source[:, ::-1]]
        assert any(np.array_equal(image, c[r:r + 16, s:s + 16]) for c in candidates for r in range(5) for s in range(5))


def test_crop_augmentation_zooms_into_a_window_of_the_photo_without_borders():
    # each row of the photo holds its column's index: a window resized back keeps columns in order
    ramp = np.broadcast_to(np.arange(0, 256, 4, dtype=np.uint8)[None, :, None], (64, 64, 3))
    x = np.stack([ramp, np.full((64, 64, 3), 200, np.uint8)])
    y = np.eye(2, dtype=np.float32)
    batches = [images.numpy() for images, _ in epoch_batches(x, y, 2, 0, 0, 8, augment="crop")]
    widths = []
    for images in batches:
        flat, zoomed = sorted(images, key=np.std)  # whatever the shuffle
        assert flat.dtype == np.uint8 and np.all(flat == 200)  # no black border, nothing but the photo
        row = zoomed[32, :, 0].astype(int)
        steps = np.diff(row)
        assert np.all(steps >= 0) or np.all(steps <= 0)  # one window, maybe mirrored
        assert np.array_equal(zoomed, np.broadcast_to(zoomed[:1], zoomed.shape))  # rows stay rows
        widths.append(abs(row[-1] - row[0]) / 252)
    assert 0.35 < min(widths) < 0.9  # zoomed in, at most to the smallest window (area 1/4, aspect 3:4)


def test_photos_are_cropped_and_small_images_shifted_by_default():
    assert default_augmentation(224, 224) == "crop"
    assert default_augmentation(32, 128) == "shift"
    assert default_augmentation(24, 96) == "shift"


def test_unfreeze_choices():
    assert first_trainable_layer("all") == "Conv1"
    assert first_trainable_layer("13") == first_trainable_layer("block_13") == "block_13_expand"
    assert first_trainable_layer("Conv_1") == "Conv_1"
    with pytest.raises(UserError):
        first_trainable_layer("block_99")


def test_a_missing_base_names_the_command_that_makes_it(tmp_path, capsys):
    missing = tmp_path / "cifar10_lilTinyNet.h5"
    assert run_main(stage2.main, "--base", str(missing), "--output", str(tmp_path / "out.h5")) == 2
    assert capsys.readouterr().err == f"error: model {missing} not found; make it with: python lilTinyNet.py\n"


def test_finetunes_the_shared_slice_with_the_shared_weights(base_run, tmp_path):
    base_path, _ = base_run
    output = tmp_path / "cifar10_finetuned_lilTinyNet.h5"
    result = run_script("lilTinyNet_finetuner.py", "--base", str(base_path), "--output", str(output),
                        "--epochs", "1", "--unfreeze", "block_16")
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(output.with_suffix(".json").read_text())
    assert info["data"]["train"] == 800 and info["metrics"]["test"]["accuracy"] > 0.3


def test_many_steps_per_call_end_each_epoch_where_its_batches_end():
    # 12 steps an epoch: 5 steps per call would run 15, eating the next epoch's first batches, so
    # epoch ends (validation, checkpoints, resume) would drift; steps_per_call's divisor must not.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(48, 3)).astype("float32"), np.eye(2, dtype="float32")[rng.integers(0, 2, 48)]

    def weights_at_epoch_ends(calls: int) -> list[np.ndarray]:
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
        net.compile("sgd", "categorical_crossentropy", steps_per_execution=calls)
        ends: list[np.ndarray] = []
        record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(net.get_weights()[0]))
        net.fit(epoch_batches(x, y, 4, 0, 0, 3), epochs=3, steps_per_epoch=12, verbose=0, callbacks=[record])
        return ends

    assert steps_per_call(12, 5) == 4 and steps_per_call(352, 64) == 44 and steps_per_call(7, 4) == 1
    expected = weights_at_epoch_ends(1)
    np.testing.assert_allclose(weights_at_epoch_ends(steps_per_call(12, 5)), expected, rtol=1e-6)
    assert not np.allclose(weights_at_epoch_ends(5)[0], expected[0])  # the trap is real


def tiny_run(tmp_path, baseline: tuple[float, float]):
    """A Dense layer trained 6 epochs with patience 2 on validation labels no model can fit (half
    of each input's copies labelled each way): validation accuracy is 0.5 in every epoch, and its
    loss at least ln 2. Returns the run, the starting weights and the weights it ends with."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, 32)]
    x_val, y_val = np.concatenate([x[:8], x[:8]]), np.eye(2, dtype="float32")[[0] * 8 + [1] * 8]
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    net.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    start = net.get_weights()
    run = train(net, {"train": x, "val": x_val}, {"train": y, "val": y_val}, epochs=6, batch_size=8, seed=0,
                output=tmp_path / "m.h5", resume=False, log_dir=None, patience=2, baseline=baseline)
    assert all(row["val_accuracy"] == 0.5 for row in run.rows)
    return run, start, net.get_weights()


def test_a_baseline_no_epoch_beats_keeps_the_starting_weights_and_patience_counts_from_the_run(tmp_path):
    """A baseline of accuracy 0.5 at loss ln 2 cannot be beaten: no epoch is kept, and the run still
    trains until its own best is `patience` epochs old, not `patience` epochs after the baseline."""
    run, start, end = tiny_run(tmp_path, (0.5, math.log(2)))
    run_best = 1  # the run's own best: the lowest validation loss so far, accuracy being 0.5 throughout
    for epoch, row in enumerate(run.rows, 1):
        run_best = epoch if row["val_loss"] < run.rows[run_best - 1]["val_loss"] else run_best
        if epoch - run_best >= 2:
            break
    assert run.best_epoch == 0 and len(run.rows) == epoch >= 3
    for before, after in zip(start, end, strict=True):
        np.testing.assert_array_equal(after, before)


def test_of_epochs_equal_in_accuracy_the_lowest_validation_loss_is_kept(tmp_path):
    """Equal accuracy is common on a small validation set: the tie goes to the lower loss, the
    baseline's included."""
    run, start, end = tiny_run(tmp_path, (0.5, 100.0))
    losses = [row["val_loss"] for row in run.rows]
    assert len(set(losses)) == len(losses) and run.best_epoch == int(np.argmin(losses)) + 1
    assert not np.allclose(end[0], start[0])
    assert better((0.6, 9.0), (0.5, 0.1)) and better((0.5, 0.2), (0.5, 0.3))
    assert not better((0.5, 0.3), (0.5, 0.3)) and not better((0.4, 0.0), (0.5, 0.3))


@pytest.mark.slow
def test_an_end_to_end_random_weights_base_fine_tunes_and_reloads_in_a_fresh_process(tiny_tree, tmp_path, capsys):
    """Stage 1 without the feature cache (the end-to-end path trains the same kind of model) and
    from random weights, then stage 2 on it, then the result evaluated afresh in another process."""
    base, tuned = tmp_path / "base.h5", tmp_path / "tuned.h5"
    assert run_main(stage1.main, "--data-dir", str(tiny_tree), "--weights", "none", "--alpha", "0.35",
                    "--image-size", "32", "--epochs", "2", "--head", "linear", "--no-feature-cache",
                    "--output", str(base)) == 0, capsys.readouterr().err
    info = json.loads(base.with_suffix(".json").read_text())
    assert info["settings"]["feature_cache"] is False and "features" not in info["times"]
    assert info["class_names"] == ["cat", "dog", "frog"] and len(info["history"]) == 2
    assert run_main(stage2.main, "--base", str(base), "--output", str(tuned), "--epochs", "1",
                    "--unfreeze", "block_16", "--batch-size", "64") == 0, capsys.readouterr().err
    code = f"""
import json, keras
from lilTinyNet import preprocess_data
from tinynet.data import load_dataset
data = load_dataset({str(tiny_tree)!r}, 32)
model = keras.models.load_model({str(tuned)!r})
test = data.parts["test"]
print(json.dumps(model.evaluate(*preprocess_data(test.images, test.labels, 3), verbose=0, return_dict=True)))
"""
    fresh = run_script("-c", code)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    recorded = json.loads(tuned.with_suffix(".json").read_text())["metrics"]["test"]
    assert json.loads(fresh.stdout.strip().splitlines()[-1])["accuracy"] == pytest.approx(recorded["accuracy"])


def test_resuming_a_run_of_an_older_version_or_another_model_is_one_line_not_a_traceback(tmp_path):
    """state.json of an older version (other keys), or saved variables of another model, end in a
    UserError telling to start afresh: zip(strict=True) or a KeyError would be a traceback."""
    tiny_run(tmp_path, (0.5, 100.0))
    state = tmp_path / "m.state" / "state.json"
    saved = state.read_text()
    wider = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, activation="softmax")])
    wider.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    x, y = np.zeros((8, 3), "float32"), np.eye(3, dtype="float32")[[0, 1, 2, 0, 1, 2, 0, 1]]

    def resume():
        train(wider, {"train": x, "val": x}, {"train": y, "val": y}, epochs=2, batch_size=8, seed=0,
              output=tmp_path / "m.h5", resume=True, log_dir=None, patience=2)

    with pytest.raises(UserError, match="another model"):
        resume()
    old = json.loads(saved)
    old["best_accuracy"], old["run_best_accuracy"] = old.pop("best")[0], old.pop("run_best")[0]
    state.write_text(json.dumps(old))
    with pytest.raises(UserError, match="older lilTinyNet"):
        resume()
