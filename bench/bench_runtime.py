"""TensorFlow against LiteRT for every pass that trains nothing, timed in one run on the same images.

    python -m bench.bench_runtime                    # CIFAR-10 at 128 pixels (alpha 0.35), flowers5 at 224 (alpha 1.0)
    python -m bench.bench_runtime --only cifar10

For each data set, in fresh processes so that no measurement weighs on another:
- the frozen front's pass over every image (stage 1's feature pass) on TensorFlow and on LiteRT,
  its conversion timed apart, and the largest difference between the two runtimes' features;
- stage 1 end to end (lilTinyNet.py, the shared weights) with --runtime tensorflow and litert:
  wall time, test accuracy, and the stage over the TensorFlow pass timed just before;
- the evaluators' pass over the test set with a trained model (batch 128) on each runtime, and the
  share of test images given the same top class;
- predict.py's forward pass: one image (median latency over repeats) and batches of 128.
Results go to bench/results/runtime.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_app import cpu
from bench.bench_own_data import FLOWERS
from bench.common import DATA, in_fresh_process, run_child, save, weights

SETS = {"cifar10": (DATA, 0.35, 128), "flowers5": (FLOWERS, 1.0, 224)}


def front_passes(source: str, alpha: float, image_size: int) -> dict:
    """The feature pass over every image on each runtime, after a warm-up of each."""
    from tinynet import runtime
    from tinynet.data import load_dataset
    from tinynet.features import PASS_BATCH_SIZE, extract_features
    from tinynet.model import build_model, feature_extractor

    data = load_dataset(source, image_size)
    images = np.concatenate([part.images for part in data.parts.values()])
    head = "blocks" if len(images) > 2000 else "linear"  # what stage 1's defaults pick
    extractor = feature_extractor(build_model(data.num_classes, image_size, alpha, str(weights(alpha)), head))
    start = time.perf_counter()
    litert = runtime.litert_runner(extractor, images.shape[1:])
    conversion = time.perf_counter() - start
    result, features = {"images": len(images), "head": head, "conversion_seconds": round(conversion, 1)}, {}
    for name, forward in (("tensorflow", runtime.tensorflow_runner(extractor)), ("litert", litert)):
        forward(images[:PASS_BATCH_SIZE])  # warm-up: trace, or allocate
        start = time.perf_counter()
        features[name] = extract_features(extractor, images, PASS_BATCH_SIZE, call=forward)
        result[f"{name}_seconds"] = round(time.perf_counter() - start, 1)
    difference = np.abs(features["litert"] - features["tensorflow"]).max() / np.abs(features["tensorflow"]).max()
    result["largest_difference_of_scale"] = float(difference)
    result["litert_speed_up"] = round(result["tensorflow_seconds"] / result["litert_seconds"], 2)
    return result


def model_passes(model_path: str, source: str, image_size: int) -> dict:
    """The evaluators' pass over the test set and predict.py's, on each runtime."""
    import keras

    from tinynet import runtime
    from tinynet.data import load_dataset
    from tinynet.metrics import compiled_call, evaluate, latency_ms, throughput

    model = keras.models.load_model(model_path)
    test = load_dataset(source, image_size).parts["test"]
    names = [str(k) for k in range(model.output_shape[-1])]
    litert = runtime.litert_runner(model, test.images.shape[1:])
    result, predicted = {"test_images": len(test.labels)}, {}
    for name, forward in (("tensorflow", runtime.tensorflow_runner(model)), ("litert", litert)):
        evaluation = evaluate(model_path, model, test.images, test.labels, names, 128, forward)
        predicted[name] = evaluation.predicted
        result[name] = {"evaluator_images_per_s": round(evaluation.images_per_second, 1),
                        "accuracy": evaluation.accuracy,
                        "batch_128_images_per_s": round(throughput(forward, test.images[:2048], 128), 1),
                        "batch_1_ms": round(latency_ms(compiled_call(model) if name == "tensorflow" else forward,
                                                       test.images[0], 100), 3)}
    result["same_top_class"] = float(np.mean(predicted["litert"] == predicted["tensorflow"]))
    result["keras_call_ms"] = round(keras_call_ms(model, test.images[0]), 3)
    for key in ("evaluator_images_per_s", "batch_128_images_per_s"):
        result[f"{key}_ratio"] = round(result["litert"][key] / result["tensorflow"][key], 2)
    result["batch_1_latency_ratio"] = round(result["keras_call_ms"] / result["litert"]["batch_1_ms"], 1)
    return result


def keras_call_ms(model, image: np.ndarray, repeats: int = 30) -> float:
    """Median milliseconds of a plain Keras call on one image, as a user's script would make it."""
    model(image[None], training=False)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(image[None], training=False)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def stage1(source: Path, alpha: float, choice: str, output: Path, fresh: bool = True) -> dict:
    """lilTinyNet.py on one runtime; with a fresh, empty conversion cache, LiteRT's conversion is paid."""
    if fresh:
        os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(dir=output.parent)
    run = run_child(["lilTinyNet.py", "--data-dir", str(source), "--alpha", str(alpha), "--weights",
                     str(weights(alpha)), "--runtime", choice, "--output", str(output)], output.with_suffix(".log"))
    info = json.loads(output.with_suffix(".json").read_text())
    return {**run, "test_accuracy": info["metrics"]["test"]["accuracy"], "runtime": info.get("runtime"),
            "times": info["times"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(SETS), default=list(SETS))
    args = parser.parse_args()
    results = {"hardware": cpu(), "threads": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # every conversion timed, none from an earlier run
        for name in args.only:
            source, alpha, size = SETS[name]
            front = in_fresh_process(front_passes, str(source), alpha, size)
            row = {"alpha": alpha, "image_size": size, "front": front}
            for choice in ("tensorflow", "litert"):
                row[f"stage1_{choice}"] = stage1(source, alpha, choice, Path(tmp) / f"{name}_{choice}.h5")
            # Again, the conversion now in the cache, as a second run on the same settings finds it.
            row["stage1_litert_cached"] = stage1(source, alpha, "litert", Path(tmp) / f"{name}_litert.h5", fresh=False)
            tensorflow_pass = row["front"]["tensorflow_seconds"]
            for choice in ("tensorflow", "litert", "litert_cached"):
                row[f"stage1_{choice}"]["over_tensorflow_pass"] = round(
                    row[f"stage1_{choice}"]["wall_seconds"] / tensorflow_pass, 2)
            row["passes"] = in_fresh_process(model_passes, str(Path(tmp) / f"{name}_tensorflow.h5"), str(source), size)
            results[name] = row
            print(json.dumps(row), flush=True)
    save("runtime", results)


if __name__ == "__main__":
    main()
