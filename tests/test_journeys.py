"""The journeys users take: every script in README's order, each run as a user runs it, in one
folder, with the defaults (the ImageNet weights found in the Keras cache, as after a download).
Two kinds of data: a small folder of photos of many sizes (stage 1 fits the linear head) and a
CIFAR-like set of small images (the blocks head)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import CLASS_COLOURS, ROOT, SIZES, photo, run_script, write_image_tree
from PIL import Image

SCRIPTS = {name: str(ROOT / f"{name}.py") for name in ("lilTinyNet", "lilTinyNet_finetuner",
                                                       "evaluator_lilTinyNet_finetuned", "megaTest", "predict",
                                                       "export")}
BASE, TUNED = "cifar10_lilTinyNet", "cifar10_finetuned_lilTinyNet"


def photo_folder(root: Path, per_class: int = 16) -> Path:
    """<class>/*.jpg, photos of six sizes, a quarter of them stored sideways with EXIF orientation,
    and one in eight filed under the wrong class, as in real folders: stage 1 cannot be perfect, so
    stage 2 fine-tunes (on a perfect one it returns the base untouched: test_own_images)."""
    colours = list(CLASS_COLOURS.values())
    for label, name in enumerate(CLASS_COLOURS):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            colour = colours[(label + (i % 8 == 5)) % len(colours)]
            (root / name / f"IMG_{i:04d}.jpg").write_bytes(
                photo(colour, SIZES[i % len(SIZES)], 1000 * label + i, rotated=i % 4 == 0))
    return root


JOURNEYS = {  # data, then flags that only keep the run short (stage 1, stage 2)
    "photos": (photo_folder, [], ["--epochs", "2"]),
    "cifar-like": (lambda root: write_image_tree(root, {"train": 20, "test": 5}),
                   ["--head", "blocks", "--epochs", "3"], ["--epochs", "2"]),
}


def walk(kind: str, folder: Path, weights: str, stage1: list[str], stage2: list[str]) -> dict:
    """Every script in order, in `folder`; returns their completed processes by script name."""
    make_data, _, _ = JOURNEYS[kind]
    data = make_data(folder / "data")
    keras_home = folder / "keras"
    (keras_home / "models").mkdir(parents=True)
    shutil.copy(weights, keras_home / "models")
    one_image = str(next(path for path in sorted(data.rglob("*")) if path.is_file()))
    steps = [("lilTinyNet", ["--data-dir", str(data), "--alpha", "0.35", *stage1]),
             ("lilTinyNet_finetuner", stage2),
             ("evaluator_lilTinyNet_finetuned", []),
             ("megaTest", []),
             ("predict", [one_image, "--explain", "heat_maps"]),
             ("export", ["--format", "tflite"])]
    runs = {}
    for name, flags in steps:
        runs[name] = run_script(SCRIPTS[name], *flags, cwd=folder, env={"KERAS_HOME": str(keras_home)}, timeout=600)
        assert runs[name].returncode == 0, f"{name}.py: {runs[name].stderr[-3000:]}"
    return runs


@pytest.fixture(scope="module", params=list(JOURNEYS))
def journey(request, weights, tmp_path_factory):
    kind = request.param
    folder = tmp_path_factory.mktemp(kind)
    _, stage1, stage2 = JOURNEYS[kind]
    return kind, folder, walk(kind, folder, weights, stage1, stage2)


def test_every_script_writes_what_readme_says(journey):
    kind, folder, runs = journey
    assert json.loads((folder / f"{TUNED}.json").read_text())["give_up"]["fine_tuned"], "stage 1 is not perfect"
    for stem in (BASE, TUNED):
        assert (folder / f"{stem}.h5").stat().st_size > 100_000
        assert json.loads((folder / f"{stem}.json").read_text())["metrics"]["test"]["accuracy"] >= 0
    head = json.loads((folder / f"{BASE}.json").read_text())["head"]
    assert head == {"photos": "linear", "cifar-like": "blocks"}[kind]
    for page in ("index.html", "megatest.html"):
        assert (folder / "reports" / page).stat().st_size > 10_000
    for name in ("learning_curves.png", f"{BASE}_confusion.png", f"{TUNED}_confusion.png",
                 f"{TUNED}_calibration.png", f"{TUNED}_predictions.png"):
        with Image.open(folder / "reports" / name) as image:
            assert min(image.size) > 200, name
    assert "gain" in runs["megaTest"].stdout and TUNED in runs["megaTest"].stdout
    assert len(list((folder / "heat_maps").glob("*.png"))) == 1
    assert (folder / f"{TUNED}.tflite").stat().st_size > 100_000
    assert "tflite" in runs["export"].stdout


def test_the_learning_curves_show_stage_one_as_what_it_was(journey):
    """The linear head's history is its penalty grid, not epochs: the evaluator draws it apart."""
    kind, folder, runs = journey
    base = json.loads((folder / f"{BASE}.json").read_text())
    rows = base["history"]
    assert ("penalty" in rows[0]) == (kind == "photos")
    assert "learning_curves.png" in runs["evaluator_lilTinyNet_finetuned"].stdout


@pytest.mark.slow
def test_the_photo_journey_with_every_default(weights, tmp_path):
    """Stage 2's own schedule too (a few hundred steps), not cut short as above."""
    runs = walk("photos", tmp_path, weights, [], [])
    assert "schedule:" in runs["lilTinyNet_finetuner"].stdout
    tuned = json.loads((tmp_path / f"{TUNED}.json").read_text())
    assert tuned["give_up"]["fine_tuned"] and len(tuned["history"]) >= 1
