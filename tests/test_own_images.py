"""A user's own photos end to end: both stages and megaTest on a two-class .tar.gz of photos of many
sizes, laid out train/ and val/ under one top folder, as public sets ship."""

from __future__ import annotations

import io
import json
import tarfile

import keras
import numpy as np
import pytest
from conftest import CLASS_COLOURS, SIZES, photo, run_script
from PIL import Image


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """meadow/train/<class>/ (12 photos each) and meadow/val/<class>/ (4 each), with a macOS
    .DS_Store and a README beside them, in a .tar.gz."""
    path = tmp_path_factory.mktemp("photos") / "meadow.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        for split, count in (("train", 12), ("val", 4)):
            for label, (name, colour) in enumerate(CLASS_COLOURS.items()):
                for i in range(count):
                    seed, size = 1000 * label + 100 * (split == "val") + i, SIZES[i % len(SIZES)]
                    add(f"meadow/{split}/{name}/IMG_{i:04d}.JPG", photo(colour, size, seed, rotated=i % 4 == 0))
        add("meadow/.DS_Store", b"\0\0\0\1Bud1")
        add("meadow/README.txt", b"two kinds of flowers")
    return path


@pytest.fixture(scope="module")
def trained(photos, weights, tmp_path_factory):
    """Stage 1 with its defaults; stage 2 for ten epochs at a rate far too high, tried although stage 1
    is perfect; megaTest; and stage 2 with its defaults."""
    folder = tmp_path_factory.mktemp("run")
    base, tuned, mega = folder / "base.h5", folder / "tuned.h5", folder / "mega.json"
    runs = [run_script("lilTinyNet.py", "--data-dir", str(photos), "--alpha", "0.35", "--weights", weights,
                       "--output", str(base)),
            run_script("lilTinyNet_finetuner.py", "--base", str(base), "--output", str(tuned), "--epochs", "10",
                       "--learning-rate", "10", "--skip-from", "1.01"),
            run_script("megaTest.py", "--models", str(base), str(tuned), "--json", str(mega), "--report",
                       str(folder / "megatest.html")),
            run_script("lilTinyNet_finetuner.py", "--base", str(base), "--output", str(folder / "untouched.h5")),
            run_script("evaluator_lilTinyNet_finetuned.py", "--models", str(base), str(folder / "untouched.h5"),
                       "--out-dir", str(folder / "reports"))]
    for result in runs:
        assert result.returncode == 0, result.stderr[-3000:]
    return base, tuned, mega, runs


def assert_same_predictions(base, other) -> None:
    """The two saved models give the same probabilities: the other hands back the base's weights."""
    images = np.stack([np.asarray(Image.new("RGB", (90, 60), colour)) for colour in CLASS_COLOURS.values()])
    before, after = (keras.models.load_model(path).predict(images, verbose=0) for path in (base, other))
    np.testing.assert_allclose(after, before, atol=1e-6)


def test_stage_one_reads_the_layout_and_chooses_for_a_small_set(trained):
    base, _, _, (first, *_) = trained
    info = json.loads(base.with_suffix(".json").read_text())
    data = info["data"]
    assert data["layout"] == "train/ (train) and val/ (test)"
    assert (data["train"], data["val"], data["test"]) == (18, 6, 8), "val/ is the test set; validation is carved"
    assert data["image_size"] == 224, "photos train at MobileNetV2's native size"
    assert data["square"] == "crop" and info["class_names"] == sorted(CLASS_COLOURS)
    assert info["head"] == "linear" and "head: linear" in first.stdout and "penalty" in info
    assert "note: skipped 1 file(s)" in first.stdout and "README.txt" in first.stdout
    assert ".DS_Store" not in first.stdout + first.stderr
    assert info["metrics"]["val"]["accuracy"] == 1.0, "one colour per class: the head must separate them"
    assert info["cross_validated_accuracy"] == 1.0
    assert "cross-validated on all 24 training and validation images (5 folds): accuracy 1.0000" in first.stdout


def test_stage_two_gives_up_after_a_third_of_its_schedule_when_it_cannot_beat_the_base(trained):
    """The base is perfect on validation, and fine-tuning at a rate that wrecks the features falls
    far below it: after two of ten epochs stage 2 stops, says so, and hands back the base's weights."""
    base, tuned, _, (_, second, *_) = trained
    info = json.loads(tuned.with_suffix(".json").read_text())
    assert info["base_val_accuracy"] == 1.0 and info["returned"] == "base" and info["give_up"]["gave_up"]
    assert info["give_up"]["epoch"] == len(info["history"]) == 2, "a fifth of the ten epochs"
    assert "fine-tuning gave up after 2 of 10 epochs: the output is the base model" in second.stdout
    assert_same_predictions(base, tuned)


def test_stage_two_returns_the_base_untouched_when_stage_one_leaves_nothing_to_gain(trained):
    """Stage 1 classifies every image right, cross-validated: by default stage 2 does not fine-tune,
    says why and how to make it, and hands back the base's weights without an epoch of training."""
    base, _, _, runs = trained
    untouched = base.with_name("untouched.h5")
    info = json.loads(untouched.with_suffix(".json").read_text())
    assert info["returned"] == "base" and info["history"] == [] and "train" not in info["times"]
    assert info["give_up"] == {**info["give_up"], "fine_tuned": False, "cross_validated_accuracy": 1.0,
                               "skip_from": 0.95}
    assert "the output is the base model, not fine-tuned (--skip-from 1.01 fine-tunes anyway)" in runs[-2].stdout
    page = (base.parent / "reports" / "index.html").read_text()
    assert "not fine-tuned: stage 1&#x27;s cross-validated accuracy 1.0000 is at least 0.95" in page
    assert (base.parent / "reports" / "learning_curves.png").exists(), "stage 1's point and penalties"
    assert_same_predictions(base, untouched)


def test_megatest_reports_what_training_measured_on_the_same_test_photos(trained):
    base, tuned, mega, _ = trained
    rows = json.loads(mega.read_text())
    assert rows["test_images"] == 8
    for row, path in zip(rows["models"], (base, tuned), strict=True):
        recorded = json.loads(path.with_suffix(".json").read_text())["metrics"]["test"]
        assert row["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-6)
        assert row["loss"] == pytest.approx(recorded["loss"], rel=1e-4)


def test_the_saved_model_makes_a_raw_photo_square_as_training_did(trained):
    """A wide photo given to the saved model whole is centre-cropped inside it, as the loader
    cropped the training photos: its outer bands of the other class's colour do not count."""
    base, *_ = trained
    pixels = np.zeros((60, 180, 3), np.uint8)
    pixels[:, :60], pixels[:, 60:120], pixels[:, 120:] = CLASS_COLOURS["cornflower"], CLASS_COLOURS["poppy"], \
        CLASS_COLOURS["cornflower"]
    probabilities = keras.models.load_model(base).predict(pixels[None], verbose=0)[0]
    assert sorted(CLASS_COLOURS)[int(probabilities.argmax())] == "poppy"
