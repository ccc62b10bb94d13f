"""Folders larger than memory: images streamed from their files, and stage 1's features in files,
give what the in-memory path gives."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, run_main
from PIL import Image

from tinynet import stage1, stage2
from tinynet.batches import epoch_batches, in_batches
from tinynet.data import load_dataset, split_data
from tinynet.streaming import FeatureFile, ImageFiles, streams, take

SIZES = [(40, 30), (64, 64), (30, 50), (48, 36)]  # (width, height): all larger than the model's 32 pixels


def write_photo_tree(root: Path, per_class: int, bad: bool = False) -> Path:
    """root/<class>/ with class-coloured JPEGs of several sizes (validation and test are carved);
    with `bad`, one more file that is not an image at all."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            width, height = SIZES[i % len(SIZES)]
            pixels = rng.integers(0, 60, (height, width, 3))
            pixels[..., label] += 150
            buffer = io.BytesIO()
            Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG")
            (folder / f"{i:03d}.jpg").write_bytes(buffer.getvalue())
    if bad:
        (root / CLASSES[0] / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_photo_tree(tmp_path_factory.mktemp("stream") / "photos", 40)


def test_streamed_images_are_the_ones_held_in_memory(tree):
    streamed, held = (load_dataset(str(tree), 32, "crop", stream) for stream in ("on", "off"))
    assert streamed.streamed and not held.streamed and "streamed" in streamed.layout
    splits = [split_data(data, None, None, seed=3) for data in (streamed, held)]
    for split in ("train", "val", "test"):
        files = splits[0].images[split]
        assert isinstance(files, ImageFiles) and isinstance(splits[1].images[split], np.ndarray)
        np.testing.assert_array_equal(splits[0].labels[split], splits[1].labels[split])
        np.testing.assert_array_equal(take(files, np.arange(len(files))), splits[1].images[split])
    assert splits[0].carved == splits[1].carved


def test_training_batches_from_files_equal_those_from_memory(tree):
    """The same order and the same augmentation, image for image."""
    streamed, held = (load_dataset(str(tree), 32, "crop", stream).parts["train"] for stream in ("on", "off"))
    batches = [list(epoch_batches(part.images, part.labels, 16, seed=1, first_epoch=0, epochs=2, augment="shift"))
               for part in (streamed, held)]
    assert len(batches[0]) == len(batches[1]) == 2 * int(np.ceil(len(held.labels) / 16))
    for (x_file, y_file), (x_memory, y_memory) in zip(*batches, strict=True):
        np.testing.assert_array_equal(x_file.numpy(), x_memory.numpy())
        np.testing.assert_array_equal(y_file.numpy(), y_memory.numpy())
    in_order = np.concatenate([x.numpy() for x in in_batches(streamed.images, 7)])
    np.testing.assert_array_equal(in_order, held.images)


def test_feature_file_gives_back_its_rows(tmp_path):
    rows = np.random.default_rng(0).normal(size=(50, 3, 2)).astype(np.float32)
    features = FeatureFile(tmp_path / "f.f32", (3, 2))
    features.append(rows[:20])
    features.append(rows[20:])
    assert features.shape == (50, 3, 2) and (tmp_path / "f.f32").stat().st_size == rows.nbytes
    picked = np.array([49, 0, 7, 7, 31])
    np.testing.assert_array_equal(features.rows(picked), rows[picked])
    np.testing.assert_array_equal(features[10:25], rows[10:25])
    np.testing.assert_array_equal(np.concatenate(list(in_batches(features, 16).as_numpy_iterator())), rows)


def test_auto_streams_only_what_would_not_fit():
    assert not streams(10_000, 224, "auto")  # 1.5 GB
    assert streams(100_000, 224, "auto")  # 15 GB
    assert streams(10, 32, "on") and not streams(10**7, 224, "off")


@pytest.mark.slow  # two runs of stage 1
def test_stage_one_streamed_trains_the_same_model_and_cleans_up(tree, weights, tmp_path, capsys):
    common = ["--data-dir", str(tree), "--alpha", "0.35", "--weights", weights, "--image-size", "32",
              "--head", "blocks", "--epochs", "2"]
    infos = {}
    for stream in ("on", "off"):
        output = tmp_path / stream / "model.h5"
        output.parent.mkdir()
        assert run_main(stage1.main, *common, "--stream", stream, "--output", str(output)) == 0
        infos[stream] = json.loads(output.with_suffix(".json").read_text())
    assert "features: streamed into" in capsys.readouterr().out
    assert not (tmp_path / "on" / "model.features").exists(), "the feature files are removed at the end"
    for split in ("val", "test"):
        for name, value in infos["off"]["metrics"][split].items():
            assert infos["on"]["metrics"][split][name] == pytest.approx(value, abs=1e-5)
    assert infos["on"]["data"]["carved"] == infos["off"]["data"]["carved"]
    # --cache-dir and --keep-cache: in the next test's streamed run


@pytest.mark.slow
def test_an_unreadable_streamed_image_is_skipped_recorded_and_skipped_by_stage_two(tmp_path, weights, capsys):
    """With --cache-dir and --keep-cache too: the feature files stay where they were asked to."""
    tree = write_photo_tree(tmp_path / "photos", 40, bad=True)  # 1 bad file in 121: under the 1% limit
    base, tuned, kept = tmp_path / "base.h5", tmp_path / "tuned.h5", tmp_path / "kept"
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        assert run_main(stage1.main, "--data-dir", str(tree), "--alpha", "0.35", "--weights", weights,
                        "--image-size", "32", "--head", "blocks", "--epochs", "1", "--stream", "on",
                        "--cache-dir", str(kept), "--keep-cache", "--output", str(base)) == 0
    assert sorted(p.name for p in kept.iterdir()) == ["test.f32", "train.f32", "val.f32"]
    assert not base.with_suffix(".features").exists()
    record = json.loads(base.with_suffix(".json").read_text())["data"]
    assert record["unreadable"] == [f"{CLASSES[0]}/broken.jpg"] and record["streamed"]
    assert record["train"] + record["val"] + record["test"] == 120
    assert run_main(stage2.main, "--base", str(base), "--output", str(tuned), "--epochs", "1",
                    "--batch-size", "16") == 0, capsys.readouterr().err
    tuned_record = json.loads(tuned.with_suffix(".json").read_text())["data"]
    assert {k: tuned_record[k] for k in ("train", "val", "test", "carved")} == \
        {k: record[k] for k in ("train", "val", "test", "carved")}
