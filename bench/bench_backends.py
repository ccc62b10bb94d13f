"""Bench the Keras backends: TensorFlow against JAX, and data-parallel --distribute on JAX, one
process against two on loopback. Alpha 0.35, 128 pixels.

    python -m bench.bench_backends stage1     # stage 1 on all of CIFAR-10, on each backend
    python -m bench.bench_backends epoch      # one epoch of stage 2 on each backend, and --distribute

`stage1` runs lilTinyNet.py on the shared CIFAR-10 copy on each backend (wall time, peak memory,
accuracy, the feature pass's time). `epoch` works on a subset (--per-class training images of
each class, and 100 test images each): a base on each backend, then one epoch of stage 2 from it;
then, from the JAX base, one epoch under --distribute in one process (global batch 128 on its
device) and in two (64 on each, the rate scaled as the global batch): their histories must agree,
and the ratio of their wall times is the all-reduce's cost on a machine whose two cores the two
processes share (no speed-up is possible here). A subset, because on this CPU JAX's training steps
are so much slower that an epoch of all of CIFAR-10 takes tens of minutes.
Each run is a child process. Results go to bench/results/backends_<part>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.common import DATA, RESULTS, ROOT, run_child, save, weights

ALPHA = 0.35


def stage_one(backend: str, output: Path, data: Path) -> dict:
    os.environ["KERAS_BACKEND"] = backend  # the children inherit it
    args = ["lilTinyNet.py", "--data-dir", str(data), "--alpha", str(ALPHA), "--weights", str(weights(ALPHA)),
            "--image-size", "128", "--output", str(output)]
    where = "cifar10" if data == DATA else "subset"
    return summary(run_child(args, RESULTS / f"backends_{backend}_stage1_{where}.log"), output)


def stage_two_epoch(backend: str, base: Path, output: Path) -> dict:
    os.environ["KERAS_BACKEND"] = backend
    args = ["lilTinyNet_finetuner.py", "--base", str(base), "--epochs", "1", "--output", str(output)]
    return summary(run_child(args, RESULTS / f"backends_{backend}_stage2_subset.log"), output)


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


def subset(folder: Path, per_class: int) -> Path:
    """train/<class>/ with the first per_class images of each class, test/<class>/ with 100."""
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(DATA) as archive:
        for member in archive:
            if not member.isfile():
                continue
            part, class_name = Path(member.name).parts[-3:-1]
            if counts.get((part, class_name), 0) < (per_class if part == "train" else 100):
                counts[part, class_name] = counts.get((part, class_name), 0) + 1
                target = folder / part / class_name / Path(member.name).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("stage1", "epoch"))
    parser.add_argument("--per-class", type=int, default=300, help="training images per class for `epoch`")
    args = parser.parse_args()
    result: dict = {"alpha": ALPHA, "image_size": 128}
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as work:
        work = Path(work)
        if args.part == "stage1":
            for backend in ("tensorflow", "jax"):
                result[backend] = stage_one(backend, work / f"{backend}_base.h5", DATA)
        else:
            data = subset(work / "subset", args.per_class)
            result["training_images_per_class"] = args.per_class
            for backend in ("tensorflow", "jax"):
                base = work / f"{backend}_base.h5"
                result[backend] = {"stage1": stage_one(backend, base, data),
                                   "stage2_one_epoch": stage_two_epoch(backend, base, work / f"{backend}_tuned.h5")}
            result["distribute"] = [distributed_epoch(work / "jax_base.h5", work / f"dp{n}.h5", n) for n in (1, 2)]
            one, two = result["distribute"]
            result["distribute_two_over_one_wall"] = round(two["wall_seconds"] / one["wall_seconds"], 2)
    save(f"backends_{args.part}", result)


if __name__ == "__main__":
    main()
