"""The GPU-path switches, exercised on the CPU: MirroredStrategy over two logical CPU devices,
two local MultiWorkerMirroredStrategy workers, XLA compilation, and mixed precision."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import ROOT, run_script

# Trains a head on features, then fine-tunes the top of the base one epoch, under a strategy.
# The gap head has no dropout: each replica would draw its own masks, and no two set-ups would agree.
TRAIN = """
import json, sys, numpy as np, tensorflow as tf
strategy_name, weights, out, jit = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "jit"
if strategy_name == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tinynet.devices import make_strategy
multiworker = tf.distribute.MultiWorkerMirroredStrategy  # the real thing, past make_strategy's guard
strategy = multiworker() if strategy_name == "multiworker" else make_strategy(strategy_name)
import keras
from conftest import class_images
from tinynet.model import build_model, feature_extractor, unfreeze
from tinynet.optimizers import compile_model
from tinynet.data import one_hot
from tinynet.training import train
keras.utils.set_random_seed(0)
replicas = strategy.num_replicas_in_sync
x = np.concatenate([class_images(k, 16) for k in range(3)])
y = one_hot(np.repeat(np.arange(3), 16), 3)
with strategy.scope():
    model = build_model(3, 32, 0.35, weights, "linear")
    extractor = feature_extractor(model)
features = extractor.predict(x, batch_size=8, verbose=0)
head = model.get_layer("classifier")
compile_model(head, 1e-2, jit_compile=jit)
common = dict(epochs=2, batch_size=16, seed=0, resume=False, log_dir=None, patience=3)  # global: 2 x 8 when mirrored
train(head, {"train": features, "val": features}, {"train": y, "val": y}, output=out + ".head.h5", **common)
unfreeze(model, "block_16_expand")
compile_model(model, 1e-3, jit_compile=jit)
train(model, {"train": x, "val": x}, {"train": y, "val": y}, output=out + ".tune.h5", **{**common, "epochs": 1})
np.save(out, model.predict(x, verbose=0))
print(json.dumps({"replicas": replicas}))
"""


def run_training(strategy: str, weights: str, out, env: dict | None = None, jit: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", TRAIN, strategy, weights, str(out), "jit" if jit else "auto"],
                            cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def single_device(weights, tmp_path_factory) -> np.ndarray:
    """Predictions after training on one device, without XLA: what the other set-ups must match."""
    out = tmp_path_factory.mktemp("single") / "one.npy"
    assert finish(run_training("default", weights, out))["replicas"] == 1
    single = np.load(out)
    assert single.std(0).max() > 1e-3, "the predictions must depend on the input for these tests to mean anything"
    return single


def test_mirrored_over_two_devices_matches_one_device(single_device, weights, tmp_path):
    """Two replicas of batch 8 see what one device of batch 16 sees: the same gradients."""
    assert finish(run_training("mirrored", weights, tmp_path / "two.npy"))["replicas"] == 2
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), single_device, atol=1e-4)


@pytest.mark.slow
def test_xla_compiled_training_matches_uncompiled(single_device, weights, tmp_path):
    finish(run_training("default", weights, tmp_path / "xla.npy", jit=True))
    np.testing.assert_allclose(np.load(tmp_path / "xla.npy"), single_device, atol=1e-4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="keras-team/keras#20585: Keras 3 fit() fails under MultiWorkerMirroredStrategy")
def test_two_local_workers_finish_with_identical_weights(weights, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers = [run_training("multiworker", weights, tmp_path / f"worker{i}.npy",
                            {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
               for i in range(2)]
    results = [finish(worker) for worker in workers]
    assert [r["replicas"] for r in results] == [2, 2]
    np.testing.assert_array_equal(np.load(tmp_path / "worker0.npy"), np.load(tmp_path / "worker1.npy"))


def test_multiworker_flag_explains_the_upstream_bug(tiny_tree, weights, tmp_path):
    config = {"cluster": {"worker": [f"127.0.0.1:{free_port()}"]}, "task": {"type": "worker", "index": 0}}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CONFIG": json.dumps(config)}
    result = subprocess.run([sys.executable, "lilTinyNet.py", "--data-dir", str(tiny_tree), "--weights", weights,
                             "--alpha", "0.35", "--strategy", "multiworker", "--output", str(tmp_path / "m.h5")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "keras-team/keras#20585" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed", "bfloat16"])
def test_mixed_precision_models_load_and_predict_in_float32(precision, tiny_tree, weights, tmp_path):
    output = tmp_path / "m.h5"
    result = run_script("lilTinyNet.py", "--data-dir", str(tiny_tree), "--alpha", "0.35", "--weights", weights,
                        "--image-size", "32", "--epochs", "1", "--head", "linear", "--precision", precision,
                        "--output", str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"precision mixed_{'float16' if precision == 'mixed' else 'bfloat16'}" in result.stdout
    assert keras.mixed_precision.global_policy().name == "float32", "loaded where no policy was set, as a user would"
    p = keras.models.load_model(output).predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    assert p.dtype == np.float32 and np.allclose(p.sum(1), 1, atol=1e-5), p
