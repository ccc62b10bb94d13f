"""The evaluators: every picture is written, the numbers are model.evaluate()'s, missing pieces fail cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, browser_page, run_main, run_script
from PIL import Image

from tinynet import compare, evaluate
from tinynet.runfiles import read_sidecar


@pytest.fixture(scope="module")
def models(tiny_base, tiny_finetuned):
    return [str(tiny_base), str(tiny_finetuned[0])]


@pytest.fixture(scope="module")
def report(models, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("reports")
    result = run_script("evaluator_lilTinyNet_finetuned.py", "--models", *models, "--out-dir", str(out_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return out_dir, result


def test_every_picture_is_a_real_image(report):
    out_dir, result = report
    names = [f"{stem}_{kind}.png" for stem in ("cifar10_lilTinyNet", "cifar10_finetuned_lilTinyNet")
             for kind in ("predictions", "confusion", "calibration", "architecture")] + ["learning_curves.png"]
    for name in names:
        path = out_dir / name
        assert path.stat().st_size > 10_000, name
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert min(image.size) > 200, name
        assert str(path) in result.stdout, "the terminal lists every file written"


def test_the_report_page_opens_from_disk_with_every_picture_and_the_sidecars_numbers(report, models):
    """Headless Chromium loads reports/index.html from disk: every picture decodes, nothing is
    requested from anywhere, each section is there, and the accuracies are the sidecars'."""
    out_dir, _ = report
    with browser_page() as (page, requests):
        page.goto((out_dir / "index.html").as_uri())
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
        numbers = page.eval_on_selector_all("[data-key]", "cells => cells.map(c => [c.dataset.key, c.textContent])")
        text = page.inner_text("body")
    assert len(widths) >= 9 and min(widths) > 0, widths
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    for section in ("Training", "Settings and data", "Per class", "Most confused pairs", "Confusion matrix",
                    "Calibration", "Test images", "expected calibration error", "95% interval"):
        assert section in text
    accuracies = [float(value) for key, value in numbers if key == "test-accuracy"]
    assert accuracies == pytest.approx([read_sidecar(m)["metrics"]["test"]["accuracy"] for m in models], abs=5e-5)


def test_the_most_confident_mistakes_are_shown_with_their_heat_maps(report):
    out_dir, _ = report
    with Image.open(out_dir / "cifar10_lilTinyNet_mistakes.png") as sheet:
        assert sheet.width >= 2 * 224 and sheet.height >= 224, "each mistake as the image and its heat map"


def test_the_terminal_report(report):
    _, result = report
    out = result.stdout
    assert "top-3 accuracy" in out and "precision" in out and "most confused" in out
    for name in ("cat", "dog", "frog"):
        assert name in out
    assert "Total params" in out, "model.summary() is shown"


def test_megatest_json_matches_model_evaluate(models, tiny_tree, tmp_path):
    path = tmp_path / "mega.json"
    result = run_script("megaTest.py", "--models", *models, "--json", str(path), "--report",
                        str(tmp_path / "megatest.html"))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(path.read_text())["models"]
    with browser_page() as (page, requests):
        page.goto((tmp_path / "megatest.html").as_uri())
        shown = dict(page.eval_on_selector_all("[data-key]", "cells => cells.map(c => [c.dataset.key, c.textContent])"))
        assert page.eval_on_selector("img", "image => image.naturalWidth") > 0
    assert [float(shown[f"accuracy-{Path(row['model']).name}"]) for row in rows] == pytest.approx(
        [row["accuracy"] for row in rows], abs=5e-5)
    fields = {"model", "accuracy", "loss", "top3_accuracy", "total_params", "trainable_params", "file_mb",
              "images_per_s", "latency_ms", "gain_over_base"}
    assert all(fields <= set(row) for row in rows)
    assert rows[0]["gain_over_base"] is None
    assert rows[1]["gain_over_base"] == pytest.approx(rows[1]["accuracy"] - rows[0]["accuracy"])
    gained, lost = rows[1]["images_gained"], rows[1]["images_lost"]
    assert (gained - lost) / json.loads(path.read_text())["test_images"] == pytest.approx(rows[1]["gain_over_base"])
    assert rows[1]["against_base"] == shown[f"against_base-{Path(rows[1]['model']).name}"] != ""
    assert f"{gained} test images gained, {lost} lost against the base" in result.stdout
    code = f"""
import json, keras
from lilTinyNet import preprocess_data
from tinynet.data import load_dataset
data = load_dataset({str(tiny_tree)!r}, 32)
x, y = preprocess_data(data.parts["test"].images, data.parts["test"].labels, 3)
print(json.dumps([keras.models.load_model(m).evaluate(x, y, batch_size=128, verbose=0) for m in {models!r}]))
"""
    direct = run_script("-c", code)
    assert direct.returncode == 0, direct.stderr[-3000:]
    for row, (loss, accuracy) in zip(rows, json.loads(direct.stdout.strip().splitlines()[-1]), strict=True):
        assert row["accuracy"] == pytest.approx(accuracy, abs=1e-6)
        assert row["loss"] == pytest.approx(loss, rel=1e-4)
        assert row["images_per_s"] > 0 and row["latency_ms"] > 0 and row["file_mb"] > 0


def test_without_graphviz_the_summary_is_written_instead(models, tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(ROOT)}  # no `dot` here
    result = subprocess.run([sys.executable, "evaluator_lilTinyNet_finetuned.py", "--models", models[0],
                             "--out-dir", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "note: no architecture picture" in result.stdout
    summary = tmp_path / "cifar10_lilTinyNet_architecture.txt"
    assert "mobilenetv2" in summary.read_text() and not summary.with_suffix(".png").exists()


@pytest.mark.parametrize("script", [compare, evaluate])
def test_a_missing_model_is_one_line_and_a_non_zero_exit(script, models, tmp_path, capsys):
    missing = tmp_path / "cifar10_finetuned_lilTinyNet.h5"
    assert run_main(script.main, "--models", models[0], str(missing)) == 2
    assert capsys.readouterr().err == (f"error: model {missing} not found; make it with: "
                                       "python lilTinyNet_finetuner.py\n")


@pytest.mark.parametrize(("script", "flags", "words"), [
    (compare, ["--json", "/nowhere/numbers.json"], "folder /nowhere does not exist"),
    (evaluate, ["--out-dir", "/proc/reports"], "--out-dir /proc/reports: cannot write"),
])
def test_an_unwritable_output_stops_before_any_work(script, flags, words, models, capsys):
    assert run_main(script.main, "--models", *models, *flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


@pytest.mark.parametrize(("gained", "lost", "verdict"), [
    (10, 0, "better, beyond chance"), (1, 2, "the same within chance"), (0, 10, "worse, beyond chance: ship the base")])
def test_megatest_says_whether_a_gain_over_the_base_is_beyond_chance(gained, lost, verdict):
    base_right = np.array([False] * gained + [True] * lost + [True] * 50)
    right = np.array([True] * gained + [False] * lost + [True] * 50)
    assert compare.against(right, base_right) == {"against_base": verdict, "images_gained": gained, "images_lost": lost}
