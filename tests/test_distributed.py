"""--distribute: data-parallel training over processes with keras.distribution on the JAX backend,
two processes on loopback against one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import ROOT, write_image_tree

pytest.importorskip("jax")
pytestmark = pytest.mark.slow


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(script: str, processes: int, *args: str) -> list[subprocess.Popen]:
    """`processes` copies of `python script --distribute args`, configured as keras.distribution
    reads it; one process needs no addresses."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    if processes > 1:
        env["KERAS_DISTRIBUTION_JOB_ADDRESSES"] = ",".join(f"localhost:{p}" for p in free_ports(processes))
        env["KERAS_DISTRIBUTION_NUM_PROCESSES"] = str(processes)
    return [subprocess.Popen([sys.executable, script, "--distribute", *args], cwd=ROOT, text=True,
                             env={**env, "KERAS_DISTRIBUTION_PROCESS_ID": str(i)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(processes)]


def outputs(runs: list[subprocess.Popen], timeout: int = 600) -> list[tuple[int, str, str]]:
    return [(run.returncode, out, err) for run in runs for out, err in [run.communicate(timeout=timeout)]]


def digests(results: list[tuple[int, str, str]]) -> set[str]:
    return {line.split()[-1] for _, out, _ in results for line in out.splitlines() if ": weights " in line}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_image_tree(tmp_path_factory.mktemp("dp") / "tree", {"train": 40, "test": 10})


def train_both(script: str, args: list[str], rate: float) -> list[list[tuple[int, str, str]]]:
    """The same run in one process (batch 16 on its device) and in two (8 on each): the same global
    batch and, scaled with it, the same rate. Both at once: their CPU seconds are the same."""
    single = launch(script, 1, *args[0], "--batch-size", "16", "--learning-rate", str(2 * rate))
    pair = launch(script, 2, *args[1], "--batch-size", "8", "--learning-rate", str(rate))
    return [outputs(single), outputs(pair)]


def test_two_processes_train_both_stages_as_one_does(tree, weights, tmp_path):
    folders = tmp_path / "one", tmp_path / "two"
    for folder in folders:
        folder.mkdir()
    stages = {"m": ("lilTinyNet.py", 1e-4, lambda folder: [
                  "--data-dir", str(tree), "--alpha", "0.35", "--weights", weights, "--image-size", "32",
                  "--head", "blocks", "--epochs", "2", "--output", str(folder / "m.h5")]),
              "f": ("lilTinyNet_finetuner.py", 1e-3, lambda folder: [
                  "--base", str(folder / "m.h5"), "--epochs", "2", "--unfreeze", "block_15", "--patience", "10",
                  "--output", str(folder / "f.h5")])}
    for name, (script, rate, args) in stages.items():
        single, pair = train_both(script, [args(folder) for folder in folders], rate)
        for code, _, err in single + pair:
            assert code == 0, err[-3000:]
        assert len(digests(pair)) == 1, "both processes end with the same weights"
        histories = [json.loads((folder / f"{name}.json").read_text())["history"] for folder in folders]
        for a, b in zip(*histories, strict=True):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-3, abs=1e-6)
        models = [keras.models.load_model(folder / f"{name}.h5") for folder in folders]
        for a, b in zip(*(model.get_weights() for model in models), strict=True):
            np.testing.assert_allclose(b, a, atol=1e-3)  # sums in another order; a wrong rate moves weights 1e-2
    assert sorted(p.name for p in folders[1].iterdir()) == ["f.h5", "f.json", "m.h5", "m.json"], \
        "process 0 alone writes, and no resume state is left"


def test_a_killed_process_fails_the_run_in_one_line_and_resume_continues(tree, weights, tmp_path):
    args = ["lilTinyNet.py", 2, "--data-dir", str(tree), "--alpha", "0.35", "--weights", weights,
            "--image-size", "32", "--head", "blocks", "--epochs", "6", "--patience", "20", "--batch-size", "8",
            "--learning-rate", "1e-4", "--output", str(tmp_path / "m.h5")]
    runs = launch(*args)
    state = tmp_path / "m.state" / "state.json"
    deadline = time.monotonic() + 300
    while not (state.exists() and json.loads(state.read_text())["rows"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    runs[1].send_signal(signal.SIGKILL)
    code, _, err = outputs(runs[:1], timeout=120)[0]
    assert code != 0
    assert err.strip().splitlines()[-1].startswith("error: process 0: another process of the run stopped"), err[-2000:]
    done = len(json.loads(state.read_text())["rows"])
    assert 1 <= done < 6

    resumed = outputs(launch(*args, "--resume"))
    for code, out, err in resumed:
        assert code == 0, err[-3000:]
        assert f"resuming after epoch {done}" in out
    assert len(digests(resumed)) == 1
    assert len(json.loads((tmp_path / "m.json").read_text())["history"]) == 6
