"""Bench the Keras backends on CIFAR-10 (alpha 0.35, 128 pixels): TensorFlow against JAX for stage 1
and one epoch of stage 2, and data-parallel --distribute on JAX, one process against two on loopback.

    python -m bench.bench_backends

Each run is a child process (its wall time and peak memory): stage 1 on each backend, then one
epoch of stage 2 from that backend's base. Then, from the JAX base, one epoch of stage 2 under
--distribute in one process (global batch 128 on its device) and in two (64 on each, the rate
scaled as the global batch): their histories must agree, and the ratio of their wall times is the
cost of the all-reduce on a machine whose two cores the two processes share (no speed-up is
possible here). Results go to bench/results/backends.json.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import DATA, RESULTS, ROOT, run_child, save, weights

ALPHA = 0.35


def stage_one(backend: str, output: Path) -> dict:
    os.environ["KERAS_BACKEND"] = backend  # the children inherit it
    args = ["lilTinyNet.py", "--data-dir", str(DATA), "--alpha", str(ALPHA), "--weights", str(weights(ALPHA)),
            "--image-size", "128", "--output", str(output)]
    return summary(run_child(args, RESULTS / f"backends_{backend}_stage1.log"), output)


def stage_two_epoch(backend: str, base: Path, output: Path) -> dict:
    os.environ["KERAS_BACKEND"] = backend
    args = ["lilTinyNet_finetuner.py", "--base", str(base), "--epochs", "1", "--output", str(output)]
    return summary(run_child(args, RESULTS / f"backends_{backend}_stage2.log"), output)


def summary(run: dict, output: Path) -> dict:
    info = json.loads(output.with_suffix(".json").read_text())
    return {**run, "test_accuracy": round(info["metrics"]["test"]["accuracy"], 4), "times": info["times"],
            "history": [{k: round(v, 4) for k, v in row.items()} for row in info["history"]]}


def distributed_epoch(base: Path, output: Path, processes: int) -> dict:
    """One epoch of stage 2 under --distribute in `processes` processes on loopback."""
    ports = []
    for _ in range(processes):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            ports.append(s.getsockname()[1])
    env = {**os.environ, "KERAS_BACKEND": "jax", "KERAS_DISTRIBUTION_NUM_PROCESSES": str(processes),
           "KERAS_DISTRIBUTION_JOB_ADDRESSES": ",".join(f"localhost:{p}" for p in ports) if processes > 1 else ""}
    batch, rate = 128 // processes, 3e-4 / processes  # global batch 128 and rate 3e-4, as stage 2 defaults
    args = [sys.executable, "lilTinyNet_finetuner.py", "--distribute", "--base", str(base), "--epochs", "1",
            "--batch-size", str(batch), "--learning-rate", str(rate), "--output", str(output)]
    start = time.perf_counter()
    logs = [open(RESULTS / f"backends_distribute{processes}_p{i}.log", "w") for i in range(processes)]
    runs = [subprocess.Popen(args, cwd=ROOT, env={**env, "KERAS_DISTRIBUTION_PROCESS_ID": str(i)},
                             stdout=log, stderr=subprocess.STDOUT) for i, log in enumerate(logs)]
    codes = [run.wait() for run in runs]
    seconds = time.perf_counter() - start
    for log in logs:
        log.close()
    if any(codes):
        raise SystemExit(f"--distribute with {processes} process(es) failed: {codes}; see bench/results")
    digests = {line.split()[-1] for i in range(processes)
               for line in (RESULTS / f"backends_distribute{processes}_p{i}.log").read_text().splitlines()
               if ": weights " in line}
    return {"processes": processes, "wall_seconds": round(seconds, 1),
            "weights_equal_across_processes": len(digests) == 1, **summary({}, output)}


def main() -> None:
    result: dict = {"alpha": ALPHA, "image_size": 128}
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as work:
        work = Path(work)
        for backend in ("tensorflow", "jax"):
            base = work / f"{backend}_base.h5"
            result[backend] = {"stage1": stage_one(backend, base),
                               "stage2_one_epoch": stage_two_epoch(backend, base, work / f"{backend}_tuned.h5")}
        base = work / "jax_base.h5"
        result["distribute"] = [distributed_epoch(base, work / f"dp{n}.h5", n) for n in (1, 2)]
    one, two = result["distribute"]
    result["distribute_two_over_one_wall"] = round(two["wall_seconds"] / one["wall_seconds"], 2)
    save("backends", result)


if __name__ == "__main__":
    main()
