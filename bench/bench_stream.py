"""Bench a folder larger than memory: stage 1 streamed from the files, and the streamed feature
pass against the in-memory one on the same images.

    python -m bench.bench_stream                      # 200,000 training images, 224 pixels, alpha 0.35
    python -m bench.bench_stream --copies 1           # 50,000: a quicker look

Builds the folder from the shared CIFAR-10 JPEGs re-encoded at 64 pixels: each training image
`--copies` times (as it is, mirrored, upside down, both), the test images once. Each measurement
runs in its own process:
1. lilTinyNet.py --stream on over the whole folder at 224 pixels: wall time, the feature pass's
   images per second, test accuracy, and peak resident memory (the aim: at most 4 GiB);
2. the feature pass over the first --compare training images, read from the files as stage 1
   streams them and from memory as it holds a smaller set (images loaded before the clock starts):
   images per second of each, and their ratio (the aim: at least 0.9).
Results go to bench/results/stream.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import DATA, in_fresh_process, run_child, save, weights

SIZE = 64  # pixels of the re-encoded images: larger than CIFAR-10's 32, small enough to build fast
TRANSFORMS = ("none", "mirror", "flip", "both")


def build_folder(root: Path, copies: int) -> int:
    """train/<class>/ with every training image `copies` times, test/<class>/ once; returns the count."""
    with tarfile.open(DATA) as archive:
        members = [(m.name, archive.extractfile(m).read()) for m in archive.getmembers() if m.isfile()]
    jobs = [(root, name, data, copies) for name, data in members]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        return sum(pool.map(_write_copies, jobs, chunksize=500))


def _write_copies(job: tuple[Path, str, bytes, int]) -> int:
    from PIL import Image, ImageOps

    root, name, data, copies = job
    part, class_name, file = Path(name).parts[-3:]
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
    folder = root / part / class_name
    folder.mkdir(parents=True, exist_ok=True)
    count = copies if part == "train" else 1
    for transform in TRANSFORMS[:count]:
        copy = ImageOps.mirror(image) if transform in ("mirror", "both") else image
        copy = ImageOps.flip(copy) if transform in ("flip", "both") else copy
        copy.save(folder / f"{Path(file).stem}_{transform}.jpg", quality=90)
    return count


def pass_rates(root: Path, count: int, alpha: float) -> dict:
    """Images per second of the feature pass over `count` training images, streamed and in memory."""
    return {stream: in_fresh_process(_pass_rate, str(root), count, alpha, stream) for stream in ("on", "off")}


def _pass_rate(root: str, count: int, alpha: float, stream: str) -> dict:
    from tinynet.data import load_dataset
    from tinynet.features import PASS_BATCH_SIZE, extract_features, stream_features
    from tinynet.model import build_model, feature_extractor

    images = load_dataset(root, 224, "crop", stream).parts["train"].images[:count]
    extractor = feature_extractor(build_model(10, 224, alpha, str(weights(alpha)), "blocks"))
    extractor.predict_on_batch(np.zeros((PASS_BATCH_SIZE, 224, 224, 3), np.uint8))  # warm-up: build and trace
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        if stream == "on":
            features = stream_features(extractor, images, PASS_BATCH_SIZE, Path(cache) / "train.f32")[0]
        else:
            features = extract_features(extractor, images, PASS_BATCH_SIZE)
        seconds = time.perf_counter() - start
        first = np.array(features[:200])  # compared between the two ways
    return {"images": len(images), "seconds": round(seconds, 1), "images_per_s": round(len(images) / seconds, 1),
            "first_features": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=4, choices=range(1, 5), help="copies of each training image")
    parser.add_argument("--compare", type=int, default=10_000, help="images in the streamed/in-memory comparison")
    parser.add_argument("--alpha", type=float, default=0.35)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_stream_") as work:
        root = Path(work) / "folder"
        start = time.perf_counter()
        total = build_folder(root, args.copies)
        print(f"built {total} images in {time.perf_counter() - start:.0f} s")
        output = Path(work) / "model.h5"
        stage = run_child(["lilTinyNet.py", "--data-dir", str(root), "--alpha", str(args.alpha),
                           "--weights", str(weights(args.alpha)), "--image-size", "224", "--stream", "on",
                           "--output", str(output)], Path(work) / "stage1.log")
        info = json.loads(output.with_suffix(".json").read_text())
        rates = pass_rates(root, args.compare, args.alpha)
    images = sum(info["data"][split] for split in ("train", "val", "test"))
    streamed, held = (np.array(rates[stream].pop("first_features")) for stream in ("on", "off"))
    result = {
        "images": images, "image_size": 224, "alpha": args.alpha, "source_pixels": SIZE,
        "stage1": {**stage, "test_accuracy": round(info["metrics"]["test"]["accuracy"], 4),
                   "times": info["times"],
                   "feature_pass_images_per_s": round(images / info["times"]["features"], 1)},
        "pass": {**rates, "streamed_over_in_memory": round(rates["on"]["images_per_s"]
                                                           / rates["off"]["images_per_s"], 3),
                 "features_max_difference": float(np.abs(streamed - held).max())},
    }
    save("stream", result)


if __name__ == "__main__":
    main()
