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


def same_training(folders: tuple[Path, Path], name: str, single: list, pair: list, atol: float = 1e-3) -> None:
    """The pair ends where the single process ends: the same weights in both its processes, and the
    history and weights the single run has, within `atol` (sums run in another order; a wrong rate
    moves weights by 1e-2)."""
    for code, _, err in single + pair:
        assert code == 0, err[-3000:]
    assert len(digests(pair)) == 1, "both processes end with the same weights"
    histories = [json.loads((folder / f"{name}.json").read_text())["history"] for folder in folders]
    for a, b in zip(*histories, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3, abs=1e-6)
    models = [keras.models.load_model(folder / f"{name}.h5") for folder in folders]
    for a, b in zip(*(model.get_weights() for model in models), strict=True):
        np.testing.assert_allclose(b, a, atol=atol)


def test_two_processes_train_both_stages_as_one_does_across_a_kill_and_resume(tree, weights, tmp_path):
    """Each stage in one process (batch 16 on its device) and in two (8 on each): the same global
    batch and, scaled with it, the same rate; one and two run at once (their CPU seconds are the
    same). Stage 1's pair loses process 1 after an epoch: process 0 fails in one line, and the pair
    started again with --resume ends where the single process ends (one run checks both)."""
    folders = tmp_path / "one", tmp_path / "two"
    for folder in folders:
        folder.mkdir()
    stage_1 = ["--data-dir", str(tree), "--alpha", "0.35", "--weights", weights, "--image-size", "32",
               "--head", "blocks", "--epochs", "6", "--patience", "20"]
    single = launch("lilTinyNet.py", 1, *stage_1, "--batch-size", "16", "--learning-rate", "2e-4",
                    "--output", str(folders[0] / "m.h5"))
    pair_args = [*stage_1, "--batch-size", "8", "--learning-rate", "1e-4", "--output", str(folders[1] / "m.h5")]
    pair = launch("lilTinyNet.py", 2, *pair_args)
    state = folders[1] / "m.state" / "state.json"
    deadline = time.monotonic() + 600
    while not (state.exists() and json.loads(state.read_text())["rows"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    pair[1].send_signal(signal.SIGKILL)
    code, _, err = outputs(pair[:1], timeout=120)[0]
    assert code != 0
    assert err.strip().splitlines()[-1].startswith("error: process 0: another process of the run stopped"), err[-2000:]
    done = len(json.loads(state.read_text())["rows"])
    assert 1 <= done < 6
    resumed = outputs(launch("lilTinyNet.py", 2, *pair_args, "--resume"))
    same_training(folders, "m", outputs(single), resumed)
    assert all(f"resuming after epoch {done}" in out for _, out, _ in resumed)
    assert len(json.loads((folders[1] / "m.json").read_text())["history"]) == 6

    def stage_2(folder: Path) -> list[str]:
        return ["--base", str(folder / "m.h5"), "--epochs", "2", "--unfreeze", "block_15", "--patience", "10",
                "--output", str(folder / "f.h5")]

    single = launch("lilTinyNet_finetuner.py", 1, *stage_2(folders[0]), "--batch-size", "16", "--learning-rate", "2e-3")
    pair = launch("lilTinyNet_finetuner.py", 2, *stage_2(folders[1]), "--batch-size", "8", "--learning-rate", "1e-3")
    # Stage 2's Adam steps of up to 2e-3 turn a gradient's last bits into 1e-3 on a few weights.
    same_training(folders, "f", outputs(single), outputs(pair), atol=3e-3)
    assert json.loads((folders[1] / "f.json").read_text())["best_epoch"] == 2, "fine-tuned weights are compared"
    assert sorted(p.name for p in folders[1].iterdir()) == ["f.h5", "f.json", "m.h5", "m.json"], \
        "process 0 alone writes, and no resume state is left"
