"""Fixtures: tiny datasets in every supported layout, the shared data and weights, script runners."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TINYNET_SHARED", ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data" / "cifar10-jpg-q75.tar.gz"
SHARED_WEIGHTS = SHARED / "keras" / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
CLASSES = ["cat", "dog", "frog"]


JAX_CACHE_VARIABLES = {  # every compilation cached, however quick or small
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}


def pytest_configure(config):
    """One JAX compilation cache for the whole session, empty at its start: the JAX processes the
    tests start (xdist's workers inherit the variables) compile MobileNetV2 once for each program,
    not once for each process, which costs 30 s or more here. Set in the process that starts the
    workers, before it starts them; a cache the user set already is left alone."""
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    config._jax_cache = tempfile.mkdtemp(prefix="tinynet-jax-cache-")
    # LiteRT conversions (tinynet.runtime) are cached in the session's own folder, not the user's.
    config._cache_home = tempfile.mkdtemp(prefix="tinynet-cache-")
    os.environ.update({"JAX_COMPILATION_CACHE_DIR": config._jax_cache, "XDG_CACHE_HOME": config._cache_home,
                       **JAX_CACHE_VARIABLES})


def pytest_unconfigure(config):
    if getattr(config, "_jax_cache", None):
        shutil.rmtree(config._jax_cache, ignore_errors=True)
        shutil.rmtree(config._cache_home, ignore_errors=True)
        for name in ("JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME", *JAX_CACHE_VARIABLES):
            os.environ.pop(name, None)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def class_images(label: int, count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Images whose class is visible in their colour, so a head can learn them quickly."""
    rng = np.random.default_rng(seed + label)
    images = rng.integers(0, 60, (count, size, size, 3))
    images[..., label % 3] += 150
    return images.astype(np.uint8)


CLASS_COLOURS = {"poppy": (200, 40, 30), "cornflower": (40, 70, 200)}
SIZES = [(64, 48), (120, 90), (80, 120), (100, 100), (150, 60), (72, 96)]  # (width, height)


def photo(colour: tuple[int, int, int], size: tuple[int, int], seed: int, rotated: bool) -> bytes:
    """A noisy green field with a flower-coloured disc in the middle, as a JPEG; `rotated` stores it
    sideways with the EXIF orientation that turns it upright, as phones do."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = rng.integers(0, 60, (height, width, 3)) + np.array([40, 110, 40])
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(size) / 3) ** 2
    pixels[disc] = np.array(colour) + rng.integers(-20, 20, (int(disc.sum()), 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    if rotated:
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 clockwise to view"
        image.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", exif=exif)
    else:
        image.save(buffer, "JPEG")
    return buffer.getvalue()


def write_image_tree(root: Path, per_class: dict[str, int], classes: list[str] = CLASSES) -> Path:
    """root/train/<class>/*.png and root/test/<class>/*.png with class-coloured images."""
    for split, count in per_class.items():
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(class_images(label, count, seed=10 * (split == "test"))):
                (folder / f"{i:04d}.png").write_bytes(png_bytes(image))
    return root


def write_tarball(source: Path, target: Path, arcname: str = "") -> Path:
    with tarfile.open(target, "w:gz") as archive:
        archive.add(source, arcname=arcname or ".")
    return target


def write_cifar_batches(folder: Path, per_batch: int = 20) -> tuple[Path, np.ndarray]:
    """The official cifar-10-batches-py layout, tiny: five training batches and a test batch."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels}))
        rows.append(data)
    names = [n.encode() for n in ["airplane", "automobile", "bird", "cat", "deer",
                                  "dog", "frog", "horse", "ship", "truck"]]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return folder, rows[0]


@pytest.fixture(scope="session")
def shared_slice(tmp_path_factory) -> Path:
    """A small slice of the shared CIFAR-10 JPEG copy: 100 train and 20 test images per class."""
    if not SHARED_DATA.exists():
        pytest.fail(f"the shared data is missing: {SHARED_DATA} (set TINYNET_SHARED)")
    target = tmp_path_factory.mktemp("slice") / "cifar10-slice.tar.gz"
    limits, counts = {"train": 100, "test": 20}, Counter()
    with tarfile.open(SHARED_DATA) as source, tarfile.open(target, "w:gz") as out:
        for member in source:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and counts[parts[0], parts[1]] < limits[parts[0]]:
                counts[parts[0], parts[1]] += 1
                out.addfile(member, source.extractfile(member))
    return target


@pytest.fixture(scope="session")
def weights() -> str:
    if not SHARED_WEIGHTS.exists():
        pytest.fail(f"the shared weights are missing: {SHARED_WEIGHTS} (set TINYNET_SHARED)")
    return str(SHARED_WEIGHTS)


def run_script(*args: str, cwd: Path = ROOT, timeout: int = 300, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess:
    """Run `python args...` in a fresh process from the repo root (or `cwd`), with `env` added."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@contextmanager
def browser_page():
    """A page of headless Chromium (Debian's, driven by Playwright) and the URLs it requested."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if not chromium:
        pytest.fail("Chromium is missing: apt-get install chromium (.ci/run does)")
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            yield page, requests
        finally:
            browser.close()


CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"]  # as root, offline, with nothing of its own to fetch


def run_main(main, *args: str) -> int:
    """A script's main() in this process as `python script.py args` runs it (a user's error is one
    line on stderr and exit status 2): its exit status; read the output with capsys."""
    from tinynet import cli

    try:
        cli.run(lambda: main(list(args)))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.fixture(scope="session")
def base_run(shared_slice, weights, tmp_path_factory):
    """lilTinyNet.py on the shared slice with the shared weights, as a user runs it."""
    output = tmp_path_factory.mktemp("base") / "cifar10_lilTinyNet.h5"
    result = run_script("lilTinyNet.py", "--data-dir", str(shared_slice), "--alpha", "0.35", "--weights", weights,
                        "--image-size", "64", "--head", "blocks", "--epochs", "4", "--output", str(output),
                        "--log-dir", str(output.parent / "logs"))
    assert result.returncode == 0, result.stderr[-3000:]
    return output, result


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    """Three colour-coded classes of 32x32 PNGs: 20 train and 5 test images each."""
    return write_image_tree(tmp_path_factory.mktemp("tiny") / "tree", {"train": 20, "test": 5})


@pytest.fixture(scope="session")
def tiny_base(tiny_tree, weights, tmp_path_factory) -> Path:
    """A base model on tiny_tree at 32 pixels, its blocks head trained one epoch at a low rate: left
    short of perfect on purpose, so that fine-tuning it has something to gain."""
    output = tmp_path_factory.mktemp("tiny_base") / "cifar10_lilTinyNet.h5"
    result = run_script("lilTinyNet.py", "--data-dir", str(tiny_tree), "--alpha", "0.35", "--weights", weights,
                        "--image-size", "32", "--head", "blocks", "--epochs", "1", "--learning-rate", "1e-4",
                        "--output", str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    return output


@pytest.fixture(scope="session")
def tiny_finetuned(tiny_base, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """tiny_base fine-tuned for two epochs from block_15, beside it as the standard file name. Batch 16
    gives epochs of 4 steps: in one of a single step, the warm-up's rate of 0 would leave the
    weights as they were, and the best epoch could be that one."""
    output = tiny_base.parent / "cifar10_finetuned_lilTinyNet.h5"
    result = run_script("lilTinyNet_finetuner.py", "--base", str(tiny_base), "--output", str(output),
                        "--epochs", "2", "--unfreeze", "block_15", "--learning-rate", "1e-3", "--batch-size", "16")
    assert result.returncode == 0, result.stderr[-3000:]
    return output, result
