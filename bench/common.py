"""Shared bench helpers: run a script as a child process, time it, and read its peak memory."""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TINYNET_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data" / "cifar10-jpg-q75.tar.gz"


def weights(alpha: float) -> Path:
    """The shared ImageNet weights of MobileNetV2 at this width (alpha 1.0's are rebuilt: see ../shared/README.md)."""
    return SHARED / "keras" / "models" / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5"


WEIGHTS = weights(0.35)
RESULTS = ROOT / "bench" / "results"


def run_child(args: list[str], log: Path) -> dict:
    """Run `python args...` from the repo root; return wall seconds and the child's peak RSS in GiB."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code != 0:  # the log may be in a temporary folder about to go: its end is shown here
        raise SystemExit(f"{' '.join(args)} failed with exit code {code}; the end of {log}:\n"
                         + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
    # ru_maxrss of children is the largest peak of any child so far, in KiB on Linux:
    # each bench step runs in its own bench process to keep the numbers apart.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {"wall_seconds": round(seconds, 1), "peak_rss_gib": round(peak, 2)}


def in_fresh_process(function: Callable, *args):
    """function(*args) in a new Python process that inherits nothing (spawned), so that no traced
    graph, memory pool or thread of one measurement weighs on another; returns its result."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def contract_accuracy(model_path: Path, data: Path = DATA) -> dict:
    """Test loss and accuracy the original way, in a fresh Python with no custom objects:
    load_model(path).evaluate(*preprocess_data(X, Y), batch_size=128), preprocess_data imported
    from the script as the original harness imports it."""
    code = f"""
import json, keras
from lilTinyNet import preprocess_data
from tinynet.data import load_dataset
test = load_dataset({str(data)!r}, 128).parts["test"]
loss, accuracy = keras.models.load_model({str(model_path)!r}).evaluate(*preprocess_data(test.images, test.labels),
                                                                      batch_size=128, verbose=0)
print(json.dumps({{"loss": loss, "accuracy": accuracy}}))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def flags_tag(flags: Sequence[str]) -> str:
    """Extra flags as a name for a run's logs and results: "--unfreeze block_13" -> "_unfreeze_block_13"."""
    return "".join(f"_{flag.strip('-')}" for flag in flags)


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path
