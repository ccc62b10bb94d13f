"""predict.py: the evaluator's preprocessing exactly, files of every kind, heat maps, clean failures."""

from __future__ import annotations

import csv
import json
import re
import shutil
import zipfile

import keras
import numpy as np
import pytest
from conftest import CLASSES, class_images, png_bytes, run_main
from PIL import Image

from tinynet import predict
from tinynet.calibration import calibrated
from tinynet.gradcam import GradCam
from tinynet.metrics import evaluate, load_test_data
from tinynet.model import build_model
from tinynet.runfiles import read_sidecar


def test_predicting_the_test_files_gives_the_evaluators_accuracy(tiny_base, tiny_tree, tmp_path):
    data = load_test_data([str(tiny_base)], None)
    model = keras.models.load_model(tiny_base)
    expected = evaluate(str(tiny_base), model, data.images, data.labels, data.class_names, 128)
    rows = predict.main([str(tiny_tree / "test"), "--model", str(tiny_base), "--csv", str(tmp_path / "p.csv")])

    truth = [CLASSES.index(row["path"].split("/")[-2]) for row in rows]
    guessed = [CLASSES.index(row["top"][0]["class"]) for row in rows]
    assert len(rows) == len(expected.labels) == 15
    assert np.mean(np.equal(truth, guessed)) == expected.accuracy
    temperature = read_sidecar(tiny_base)["calibration"]["temperature"]
    assert [row["top"][0]["probability"] for row in rows] == pytest.approx(
        calibrated(expected.probabilities, temperature).max(1), abs=1e-6), "the evaluator's, calibrated"
    with open(tmp_path / "p.csv") as table:
        written = list(csv.DictReader(table))
    assert [r["class_1"] for r in written] == [row["top"][0]["class"] for row in rows]
    assert [r["unsure"] for r in written] == [str(int(row["unsure"])) for row in rows]
    assert set(written[0]) == {"path", "unsure", "class_1", "probability_1", "class_2", "probability_2", "class_3",
                               "probability_3"}


def test_below_the_minimum_confidence_the_answer_is_unsure(tiny_base, tiny_tree, capsys):
    folder = str(tiny_tree / "test" / "cat")
    assert not any(row["unsure"] for row in predict.main([folder, "--model", str(tiny_base), "--min-confidence", "0"]))
    rows = predict.main([folder, "--model", str(tiny_base), "--min-confidence", "1"])
    assert all(row["unsure"] for row in rows) and len(rows) == 5
    assert capsys.readouterr().out.count("unsure, best guesses: ") == 5


def test_files_folders_archives_and_globs(tiny_base, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "deep").mkdir(parents=True)
    red, green = class_images(0, 2)  # a cat and a dog, by colour
    (photos / "deep" / "a.PNG").write_bytes(png_bytes(red))
    (photos / "b.png").write_bytes(png_bytes(green))
    (photos / "notes.txt").write_text("not an image")
    with zipfile.ZipFile(tmp_path / "more.zip", "w") as archive:
        archive.writestr("inner/c.png", png_bytes(red))
    single = tmp_path / "d.png"
    single.write_bytes(png_bytes(green))
    rows = predict.main([str(photos), str(tmp_path / "more.zip"), str(tmp_path / "*.png"), "--model", str(tiny_base),
                         "--top", "2", "--json", str(tmp_path / "p.json")])

    assert [row["path"] for row in rows] == [f"{photos}/b.png", f"{photos}/deep/a.PNG",
                                             f"{tmp_path}/more.zip/inner/c.png", str(single)]
    assert all(len(row["top"]) == 2 and row["top"][0]["class"] in CLASSES for row in rows)
    assert json.loads((tmp_path / "p.json").read_text())["images"] == rows
    out = capsys.readouterr().out
    first, second = rows[-1]["top"]
    shown = [rf"{t['class']} \({t['probability']:.2f}\)" for t in (first, second)]
    unsure = "unsure, best guesses: " if rows[-1]["unsure"] else ""
    assert re.search(rf"{single} +{unsure}{shown[0]}  {shown[1]}\n", out), "a line per image: path, classes, odds"


def test_an_unreadable_file_is_a_warning_and_the_others_are_classified(tiny_base, tmp_path, capsys):
    (tmp_path / "good.png").write_bytes(png_bytes(class_images(1, 1)[0]))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    rows = predict.main([str(tmp_path / "good.png"), str(tmp_path / "broken.jpg"), str(tmp_path / "missing.png"),
                         "--model", str(tiny_base)])
    assert [row["path"] for row in rows] == [str(tmp_path / "good.png")]
    err = capsys.readouterr().err
    assert f"warning: skipped {tmp_path / 'broken.jpg'}: not a readable image" in err
    assert f"warning: skipped {tmp_path / 'missing.png'}: no such file" in err


def test_a_model_without_its_sidecar_shows_class_numbers(tiny_base, tmp_path, capsys):
    alone = tmp_path / "alone.h5"
    shutil.copy(tiny_base, alone)
    (tmp_path / "x.png").write_bytes(png_bytes(class_images(2, 1)[0]))
    rows = predict.main([str(tmp_path / "x.png"), "--model", str(alone)])
    assert "has no sidecar" in capsys.readouterr().out
    assert {t["class"] for t in rows[0]["top"]} == {"0", "1", "2"}


def test_explain_writes_a_heat_map_per_image(tiny_base, tiny_tree, tmp_path):
    out = tmp_path / "heat"
    rows = predict.main([str(tiny_tree / "test" / "cat"), "--model", str(tiny_base), "--explain", str(out)])
    pictures = sorted(out.glob("*.png"))
    assert len(pictures) == len(rows) == 5
    with Image.open(pictures[0]) as picture:
        assert picture.size == (2 * 224 + 8, 224 + 224 // 7), "the image and its heat map side by side, a caption below"
        pixels = np.asarray(picture.convert("RGB"), np.float32)
    original, overlay, caption = pixels[:224, :224], pixels[:224, 232:], pixels[224:]
    assert overlay.std(axis=(0, 1)).max() > 5, "a heat map over the image, not a flat picture"
    assert np.abs(overlay - original).mean() > 5, "the right half is coloured by the heat map"
    assert (caption < 128).any() and (caption > 250).mean() > 0.8, "dark text on white"


def test_grad_cam_of_a_gap_head_is_the_class_activation_map(weights, tmp_path):
    """With a linear layer on globally pooled maps and two classes, the gradient of a class's
    probability weights each map by the difference of the two classes' weights (times a positive
    factor), so Grad-CAM must equal Zhou et al.'s class activation map of that difference."""
    model = build_model(2, 64, 0.35, weights, "linear")
    dense = model.get_layer("classifier").get_layer("predictions")
    dense.kernel.assign(np.random.default_rng(1).normal(0, 0.05, dense.kernel.shape))  # as if trained
    model.save(tmp_path / "m.h5")
    model = keras.models.load_model(tmp_path / "m.h5")  # as predict.py loads it: still not disconnected
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    grad_cam = GradCam(model)
    heat_maps = grad_cam.heat_maps(images, np.array([0, 1]))

    maps = keras.ops.convert_to_numpy(grad_cam.front(images))
    kernel = keras.ops.convert_to_numpy(model.get_layer("classifier").get_layer("predictions").kernel)
    for i, sign in ((0, 1), (1, -1)):
        cam = np.maximum(maps[i] @ (sign * (kernel[:, 0] - kernel[:, 1])), 0)
        assert cam.max() > 0
        assert heat_maps[i] == pytest.approx(cam / cam.max(), abs=1e-4)


def test_grad_cam_reads_the_blocks_heads_deepest_map(tiny_base):
    model = keras.models.load_model(tiny_base)
    images = np.stack([class_images(0, 1, size=64)[0], class_images(1, 1, size=64)[0]])
    heat_maps = GradCam(model).heat_maps(images, np.array([0, 1]))
    assert heat_maps.shape == (2, 1, 1), "block 16's map at 32 pixels: 1x1"
    assert ((heat_maps >= 0) & (heat_maps <= 1)).all()


def test_nothing_to_classify_is_one_line_and_a_non_zero_exit(tiny_base, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no images here")
    assert run_main(predict.main, str(tmp_path), "--model", str(tiny_base)) == 2
    assert capsys.readouterr().err == f"error: no images found in {tmp_path}\n"
