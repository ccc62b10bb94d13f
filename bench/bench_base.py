"""Bench the frozen stage: accuracy, wall time against its floor, peak memory, and the original way.

    python -m bench.bench_base                      # bench configuration, image size 128
    python -m bench.bench_base --image-size 160
    python -m bench.bench_base --alpha 1.0          # the users' default width
    python -m bench.bench_base --original           # also the original's way, end to end, 10 epochs
    python -m bench.bench_base --format batches     # the same pixels, as cifar-10-batches-py
    python -m bench.bench_base --tag bf16 --extra --precision bfloat16

The floor is one forward pass over all 60,000 images, run as lilTinyNet.py runs it, in a separate
process of the same bench run, the faster of two: of the base as far as the default head reads it
(to block 16), and of the whole base. Also the stage over the pass it made itself, trace included:
timed minutes apart, the floors swing with a drifting machine, the stage's own pass does not.
`--format batches` first writes the shared JPEGs' pixels in the official python format, which
keras.datasets.cifar10.load_data() reads, and also times what load_data() does on every call
after its download: hash its archive, extract it again, read it.
Results go to bench/results/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import DATA, RESULTS, contract_accuracy, in_fresh_process, run_child, save, weights
from tinynet.data import BATCH_FILES, load_dataset


def forward_pass_seconds(image_size: int, alpha: float) -> dict[str, float]:
    """Seconds for one pass over all 60,000 images of scale + resize + the frozen base, both as far
    as the default head reads it ("used") and whole, MobileNetV2 with include_top=False ("full").
    Each is run as lilTinyNet.py runs its pass (extract_features), after a warm-up that builds and
    traces it, and is the faster of two passes, since a floor should not carry this machine's noise.
    (model.predict on the NumPy array was no faster, and in some passes 1.5x slower.)
    With each, "<part>_cpu": the CPU seconds that pass took, to show how many cores it keeps busy."""
    return in_fresh_process(_forward_pass_seconds, image_size, alpha)


def _forward_pass_seconds(image_size: int, alpha: float) -> dict[str, float]:
    from tinynet.features import PASS_BATCH_SIZE, extract_features
    from tinynet.model import build_model, feature_extractor

    data = load_dataset(str(DATA), image_size)
    images = np.concatenate([part.images for part in data.parts.values()])
    seconds = {}
    for name, head in (("used", "blocks"), ("full", "linear")):
        extractor = feature_extractor(build_model(10, image_size, alpha, str(weights(alpha)), head))
        extractor.predict_on_batch(images[:PASS_BATCH_SIZE])  # warm-up: build and trace
        passes = []
        for _ in range(2):
            start, cpu = time.perf_counter(), sum(os.times()[:2])
            extract_features(extractor, images, PASS_BATCH_SIZE)
            passes.append((time.perf_counter() - start, sum(os.times()[:2]) - cpu))
        seconds[name], seconds[name + "_cpu"] = min(passes)
    return seconds


def official_format(folder: Path) -> Path:
    """The shared JPEGs' decoded pixels written as cifar-10-batches-py: five training batches
    of 10,000 rows (3,072 bytes, channels first), a test batch, and the class names. The images
    keep their order, so the validation split and the trained model are the JPEG run's."""
    data = load_dataset(str(DATA), 128)
    folder.mkdir(parents=True)
    train, test = data.parts["train"], data.parts["test"]
    chunks = np.array_split(np.arange(len(train.labels)), 5)
    parts = [(train.images[i], train.labels[i]) for i in chunks] + [(test.images, test.labels)]
    for name, (x, y) in zip(BATCH_FILES, parts, strict=True):
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
        (folder / name).write_bytes(pickle.dumps({b"data": rows, b"labels": y.tolist()}))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in data.class_names]}))
    return folder


def keras_reading_seconds(folder: Path) -> float:
    """Seconds that keras.datasets.cifar10.load_data() spends on every call after its download,
    timed on these batches packed as its archive: it checks the archive's sha256, extracts it
    again and reads the batches. (It cannot run as it is here: the archive is not the official one.)"""
    archive = folder.parent / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    return in_fresh_process(_keras_reading_seconds, archive, digest, folder.parent / "extracted", folder.name)


def _keras_reading_seconds(archive: Path, digest: str, extracted: Path, name: str) -> float:
    from keras.src.datasets.cifar import load_batch
    from keras.src.utils.file_utils import extract_archive, validate_file

    start = time.perf_counter()
    assert validate_file(str(archive), digest)
    extract_archive(str(archive), str(extracted))
    for batch in BATCH_FILES:
        load_batch(str(extracted / name / batch))
    return time.perf_counter() - start


def run_stage(name: str, extra: list[str], out_dir: Path, image_size: int, alpha: float, data: Path = DATA) -> dict:
    output = out_dir / f"{name}.h5"
    args = ["lilTinyNet.py", "--data-dir", str(data), "--alpha", str(alpha), "--weights", str(weights(alpha)),
            "--image-size", str(image_size), "--output", str(output), *extra]
    result = {"command": "python " + " ".join(args), **run_child(args, RESULTS / f"{name}.log")}
    sidecar = json.loads(output.with_suffix(".json").read_text())
    result.update(times=sidecar["times"], epochs=len(sidecar["history"]), metrics=sidecar["metrics"])
    result["contract_test"] = contract_accuracy(output)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--alpha", type=float, default=0.35, choices=(0.35, 1.0),
                        help="MobileNetV2's width; 1.0 is the users' default (its shared weights are rebuilt)")
    parser.add_argument("--format", choices=("jpeg", "batches"), default="jpeg",
                        help="the shared JPEG tarball as it is, or its pixels in the official python format")
    parser.add_argument("--original", action="store_true", help="also run --no-feature-cache --head original")
    parser.add_argument("--no-floor", action="store_true", help="skip timing the forward-pass floor")
    parser.add_argument("--tag", default="", help="added to the result's name")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for lilTinyNet.py")
    args = parser.parse_args()
    tags = [t for t in (args.tag, args.format if args.format != "jpeg" else "",
                        f"alpha{args.alpha}" if args.alpha != 0.35 else "") if t]
    name = "_".join([f"base_{args.image_size}", *tags])
    with tempfile.TemporaryDirectory() as tmp:
        data = official_format(Path(tmp) / "cifar-10-batches-py") if args.format == "batches" else DATA
        cached = run_stage(name, args.extra, Path(tmp), args.image_size, args.alpha, data)
        floors = {} if args.no_floor else forward_pass_seconds(args.image_size, args.alpha)
        for part in ("used", "full") if floors else ():
            cached[f"forward_pass_{part}_seconds"] = round(floors[part], 1)
            cached[f"forward_pass_{part}_cores_busy"] = round(floors[f"{part}_cpu"] / floors[part], 2)
            cached[f"stage_over_forward_pass_{part}"] = round(cached["times"]["total"] / floors[part], 2)
        cached["stage_over_its_own_pass"] = round(cached["times"]["total"] / cached["times"]["features"], 2)
        if args.format == "batches":
            cached["keras_load_data_reading_seconds"] = round(keras_reading_seconds(data), 1)
        save(name, cached)
        if args.original:
            original_name = "_".join([f"original_{args.image_size}", *tags])
            original = run_stage(original_name, ["--no-feature-cache", "--head", "original"], Path(tmp),
                                 args.image_size, args.alpha, data)
            ratio = original["times"]["total"] / cached["times"]["total"]
            original["time_ratio_original_over_cached"] = round(ratio, 1)
            save(original_name, original)


if __name__ == "__main__":
    main()
