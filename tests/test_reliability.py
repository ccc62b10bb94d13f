"""Bad input gets one line and exit status 2; kills lose no model; --resume ends where an
uninterrupted run ends; the image-folder loader survives junk files."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import ROOT, class_images, png_bytes, run_main, run_script, write_image_tree, write_tarball
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinynet import cli, stage1, stage2
from tinynet.cli import native_stderr_held
from tinynet.data import load_dataset
from tinynet.errors import UserError
from tinynet.runfiles import check_free_space


def bad_trees(root: Path) -> dict[str, Path]:
    """Data folders that are wrong in one way each."""
    trees = {}
    trees["empty"] = root / "empty"
    trees["empty"].mkdir()
    trees["unknown"] = root / "unknown"
    (trees["unknown"] / "images").mkdir(parents=True)
    (trees["unknown"] / "images" / "a.png").write_bytes(png_bytes(class_images(0, 1)[0]))
    trees["no_images"] = write_image_tree(root / "no_images", {"train": 2, "test": 1})
    shutil.rmtree(trees["no_images"] / "train" / "frog")
    (trees["no_images"] / "train" / "frog").mkdir()
    trees["mismatch"] = write_image_tree(root / "mismatch", {"train": 2, "test": 1})
    shutil.rmtree(trees["mismatch"] / "test" / "dog")
    trees["one_class"] = write_image_tree(root / "one_class", {"train": 2, "test": 1}, classes=["cat"])
    trees["evil"] = root / "evil.tar"
    with tarfile.open(trees["evil"], "w") as archive:
        image = png_bytes(class_images(0, 1)[0])
        for name in ("train/cat/0.png", "train/dog/0.png", "../evil.png"):
            member = tarfile.TarInfo(name)
            member.size = len(image)
            archive.addfile(member, io.BytesIO(image))
    trees["cut"] = root / "cut.tar.gz"
    trees["cut"].write_bytes(write_tarball(trees["mismatch"], root / "whole.tar.gz").read_bytes()[:300])
    return trees


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_tree, weights):
    root = tmp_path_factory.mktemp("bad")
    trees = bad_trees(root)
    (root / "text.h5").write_text("not a model")
    (root / "notes.txt").write_text("not weights")
    return root, trees


def row_cases(root, trees, tiny_tree, tiny_base, weights):
    """(script, flags, words the message must contain): one row per bad input."""
    ok = ["--data-dir", str(tiny_tree), "--weights", weights, "--alpha", "0.35", "--image-size", "32",
          "--output", str(root / "out.h5")]
    base = ["--base", str(tiny_base), "--output", str(root / "ft.h5")]
    truncated = root / "truncated.h5"
    truncated.write_bytes(tiny_base.read_bytes()[:5000])
    return [
        ("base", ok + ["--output", str(root / "missing" / "m.h5")], "does not exist"),
        ("base", ok + ["--output", "/proc/m.h5"], "not writable"),
        ("base", ok + ["--output", str(root / "m.keras")], ".h5"),
        ("base", ok + ["--data-dir", str(root / "nowhere")], "does not exist"),
        ("base", ok + ["--data-dir", str(trees["empty"])], "no known layout"),
        ("base", ok + ["--data-dir", str(trees["unknown"])], "no known layout"),
        ("base", ok + ["--data-dir", str(trees["no_images"])], "train/frog has no images"),
        ("base", ok + ["--data-dir", str(trees["mismatch"])], "differ"),
        ("base", ok + ["--data-dir", str(trees["one_class"])], "two or more"),
        ("base", ok + ["--data-dir", str(trees["evil"])], "'../evil.png' points outside the archive"),
        ("base", ok + ["--data-dir", str(trees["cut"])], "neither a folder nor a readable"),
        ("base", ok + ["--weights", str(root / "nowhere.h5")], "no such file"),
        ("base", ok + ["--weights", str(root / "notes.txt")], "does not fit"),
        ("base", ok + ["--alpha", "0.5"], "does not fit"),
        ("base", ok + ["--weights", "imagenet", "--alpha", "0.6"], "ImageNet weights exist only"),
        ("base", ok + ["--epochs", "0"], "positive"),
        ("base", ok + ["--batch-size", "-3"], "positive"),
        ("base", ok + ["--val-split", "1.5"], "between 0 and 1"),
        ("base", ok + ["--val-split", "0"], "between 0 and 1"),
        ("base", ok + ["--image-size", "16"], "at least 32"),
        ("base", ok + ["--alpha", "0"], "positive"),
        ("finetune", base[:1] + [str(root / "absent.h5")] + base[2:], "not found"),
        ("finetune", base[:1] + [str(truncated)] + base[2:], "not a readable Keras model"),
        ("finetune", base[:1] + [str(root / "text.h5")] + base[2:], "not a readable Keras model"),
        ("finetune", base + ["--data-dir", str(trees["one_class"].parent / "mismatch_ok")], "does not exist"),
        ("finetune", base + ["--unfreeze", "block_42"], "--unfreeze"),
        ("finetune", base + ["--epochs", "-1"], "positive"),
    ]


def test_every_bad_input_is_one_line_and_exit_2(bad, tiny_tree, tiny_base, weights, capsys):
    root, trees = bad
    mains = {"base": stage1.main, "finetune": stage2.main}
    for script, flags, words in row_cases(root, trees, tiny_tree, tiny_base, weights):
        with pytest.raises(SystemExit) as exit_info:
            cli.run(lambda script=script, flags=flags: mains[script](flags))
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2, (flags, err)
        assert words in err and err.startswith("error:"), (flags, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (flags, err)


def test_native_stderr_is_held_and_shown_only_when_the_block_fails(capfd):
    with native_stderr_held():
        os.write(2, b"start-up noise\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(RuntimeError), native_stderr_held():
        os.write(2, b"why it failed\n")
        raise RuntimeError
    assert capfd.readouterr().err == "why it failed\n"


def test_a_user_error_is_all_that_stderr_shows(tmp_path):
    """TensorFlow's C++ start-up lines would otherwise come first (tensorflow/tensorflow#100442)."""
    result = run_script("lilTinyNet.py", "--data-dir", str(tmp_path / "nowhere"), "--output", str(tmp_path / "m.h5"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: --data-dir {tmp_path / 'nowhere'} does not exist"]


def test_tensorflows_start_up_lines_show_when_every_line_is_asked_for(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "0"}
    result = subprocess.run([sys.executable, "lilTinyNet.py", "--data-dir", str(tmp_path / "nowhere")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and lines[-1] == f"error: --data-dir {tmp_path / 'nowhere'} does not exist"
    assert len(lines) > 1, "TensorFlow logs at least its oneDNN notice on x86 at this level"


def test_a_model_for_other_classes_is_refused(tiny_base, shared_slice, tmp_path, capsys):
    assert run_main(stage2.main, "--base", str(tiny_base), "--data-dir", str(shared_slice),
                    "--output", str(tmp_path / "ft.h5")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "predicts 3 classes but the data has 10" in err


def test_imagenet_weights_offline_without_a_cache_say_where_to_put_them(tiny_tree, tmp_path):
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "PYTHONPATH": str(ROOT),
           "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "lilTinyNet.py", "--data-dir", str(tiny_tree), "--alpha", "0.35",
                             "--image-size", "32", "--output", str(tmp_path / "m.h5")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5" in result.stderr
    assert str(tmp_path / "keras") in result.stderr


def test_a_full_disk_is_refused_before_training(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    check_free_space(tmp_path / "m.h5", free // 2)
    with pytest.raises(UserError, match="free"):
        check_free_space(tmp_path / "m.h5", free + 2**30)


# Kills and resume ----------------------------------------------------------------------------

def start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def kill_when(process: subprocess.Popen, ready, timeout: float = 240) -> None:
    """SIGKILL the process as soon as ready() is true."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run ended before the moment to kill it"
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


def predictions(path: Path, images: np.ndarray) -> np.ndarray:
    """What the model in the file predicts: loaded afresh, so only the file's contents count."""
    return keras.models.load_model(path).predict(images, verbose=0)


@pytest.mark.slow
def test_kills_lose_no_model_and_resume_completes(tiny_tree, tiny_base, weights, tmp_path):
    output = tmp_path / "cifar10_lilTinyNet.h5"
    shutil.copy(tiny_base, output)
    images = class_images(1, 4)
    before = predictions(output, images)
    flags = ["lilTinyNet.py", "--data-dir", str(tiny_tree), "--alpha", "0.35", "--weights", weights,
             "--image-size", "32", "--epochs", "6", "--head", "linear", "--output", str(output), "--resume"]
    state = output.with_suffix(".state") / "state.json"
    partial = output.with_name(f".{output.stem}.partial.h5")

    def says(process, words):
        return lambda: words in process.stdout.readline()

    moments = {  # moment: (extra flags, when to kill)
        "during the feature pass": ([], lambda p: says(p, "features:")),
        "mid-run, after an epoch": (["--no-feature-cache"], lambda p: state.exists),
        "during the save": (["--no-feature-cache"], lambda p: partial.exists),
    }
    for moment, (extra, when) in moments.items():
        process = start(*flags, *extra)
        kill_when(process, when(process))
        np.testing.assert_allclose(predictions(output, images), before, atol=1e-6, err_msg=moment)
    finished = run_script(*flags, "--no-feature-cache")
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "resuming after epoch" in finished.stdout
    assert len(json.loads(output.with_suffix(".json").read_text())["history"]) >= 1


@pytest.mark.slow
def test_resume_ends_where_an_uninterrupted_run_ends(tiny_base, tmp_path):
    flags = ["lilTinyNet_finetuner.py", "--base", str(tiny_base), "--epochs", "4", "--unfreeze", "block_16",
             "--learning-rate", "1e-3", "--batch-size", "64"]  # one step an epoch: the test is about epochs
    whole = tmp_path / "whole.h5"
    assert run_script(*flags, "--output", str(whole)).returncode == 0
    resumed = tmp_path / "resumed.h5"
    state = resumed.with_suffix(".state") / "state.json"
    process = start(*flags, "--output", str(resumed))
    # killed inside the averaged last quarter: epoch 3's weights must come back from the state folder
    kill_when(process, lambda: state.exists() and len(json.loads(state.read_text())["rows"]) >= 3)
    assert not resumed.exists()
    finished = run_script(*flags, "--output", str(resumed), "--resume")
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "resuming after epoch 3" in finished.stdout
    a, b = (json.loads(p.with_suffix(".json").read_text()) for p in (whole, resumed))
    for choice in ("returned", "average_last", "give_up", "peak_rate", "batch_size", "augment"):
        assert a[choice] == b[choice], choice
    assert a["returned"] == "average of epochs 3 to 4"
    keys = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        for key in keys:
            assert row_a[key] == pytest.approx(row_b[key], rel=1e-4, abs=1e-5), key
    images = class_images(2, 4)
    np.testing.assert_allclose(predictions(whole, images), predictions(resumed, images), atol=1e-5)


# Fuzzing the image-folder loader -------------------------------------------------------------

def huge_png(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge image, with almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 10))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def jpeg_bytes(array: np.ndarray) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


JUNK = st.one_of(
    st.binary(max_size=200),
    st.just(b""),
    st.integers(1, 300).map(lambda n: png_bytes(class_images(0, 1)[0])[:n]),
    st.integers(1, 600).map(lambda n: jpeg_bytes(class_images(0, 1)[0])[:n]),
    st.tuples(st.integers(20_000, 100_000), st.integers(20_000, 100_000)).map(lambda wh: huge_png(*wh)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.lists(st.tuples(JUNK, st.sampled_from([".jpg", ".png", ".txt", ""]), st.integers(0, 2),
                               st.sampled_from(["train", "test"])), max_size=4),
       renamed=st.booleans())
def test_the_loader_never_crashes_and_never_mislabels(tmp_path_factory, junk, renamed):
    tree = write_image_tree(tmp_path_factory.mktemp("fuzz"), {"train": 40, "test": 20})
    classes = ["cat", "dog", "frog"]
    if renamed:  # a good image with a misleading extension is still an image of its folder's class
        (tree / "train" / "dog" / "0000.png").rename(tree / "train" / "dog" / "0000.txt")
    for i, (data, suffix, label, split) in enumerate(junk):
        (tree / split / classes[label] / f"junk{i}{suffix}").write_bytes(data)
    try:
        data = load_dataset(str(tree), 32)
    except UserError as error:
        assert "unreadable" in str(error)
        return
    train, test = data.parts["train"], data.parts["test"]
    assert len(train.labels) >= 120 and len(test.labels) >= 60, "no good image may be dropped"
    for x, y in ((train.images, train.labels), (test.images, test.labels)):
        colours = x.reshape(len(x), -1, 3).mean(1).argmax(1)
        np.testing.assert_array_equal(colours[: len(y)], y)
