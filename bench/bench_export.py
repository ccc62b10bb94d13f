"""Bench the exports: each format's size, test accuracy, agreement with Keras, and CPU throughput at
batch 1 and batch 128, beside Keras's own, all in one process on the whole CIFAR-10 test set.

    python -m bench.bench_export            # the fine-tuned bench model of bench.bench_finetune
    python -m bench.bench_export --model PATH --tag TAG

Keras is timed both through predict() and as a traced call, which spares predict()'s per-call
work at batch 1; the speed-ups are over predict(). OpenVINO is also timed in bfloat16 (its
default on CPUs with bfloat16 units), to show what that precision costs in agreement. Needs
requirements-export.txt.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from bench.common import RESULTS, run_child, save
from tinynet import formats
from tinynet.data import load_recorded
from tinynet.runfiles import read_sidecar

SINGLE_IMAGES = 300  # timed one at a time


def images_per_second(run, images: np.ndarray, batch_size: int, whole: bool = False) -> tuple[float, np.ndarray]:
    """Throughput over the images at this batch size after one warm-up batch, and the outputs;
    whole: the runner takes all the images in one call and batches them itself (predict())."""
    count = len(images) if batch_size > 1 else SINGLE_IMAGES
    run(images[:batch_size])
    start = time.perf_counter()
    outputs = run(images) if whole and batch_size > 1 else formats.run_in_batches(run, images[:count], batch_size)
    return count / (time.perf_counter() - start), outputs


def measure(name: str, run, images: np.ndarray, labels: np.ndarray, reference: np.ndarray | None,
            whole: bool = False) -> dict:
    single, _ = images_per_second(run, images, 1)
    batched, probabilities = images_per_second(run, images, 128, whole)
    row = {"runtime": name, "accuracy": float(np.mean(probabilities.argmax(1) == labels)),
           "images_per_s_batch_1": round(single, 1), "images_per_s_batch_128": round(batched, 1)}
    if reference is not None:
        row["top_class_agreement"] = float(np.mean(probabilities.argmax(1) == reference.argmax(1)))
        row["max_probability_difference"] = float(np.abs(probabilities - reference).max())
    print(row)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(RESULTS / "models" / "cifar10_finetuned_lilTinyNet.h5"))
    parser.add_argument("--tag", default="", help="added to the result's name")
    args = parser.parse_args()
    model = keras.models.load_model(args.model)
    _, splits = load_recorded(read_sidecar(args.model).get("data", {}))
    images, labels = splits.images["test"], splits.labels["test"]
    reference = model.predict(images, batch_size=128, verbose=0)
    rows = [measure("keras-predict", lambda batch: model.predict(batch, batch_size=128, verbose=0), images, labels,
                    reference, whole=True)]
    call = tf.function(lambda batch: model(batch, training=False))  # traced, without predict()'s per-call work
    rows.append(measure("keras-traced-call", lambda batch: call(batch).numpy(), images, labels, reference))
    sizes = {"h5": round(Path(args.model).stat().st_size / 2**20, 2)}

    with tempfile.TemporaryDirectory() as folder:
        stem = Path(folder) / "model"
        command = ["export.py", "--model", args.model, "--format", *formats.FORMATS, "--output", str(stem)]
        export_run = run_child(command, RESULTS / "export.log")
        for fmt in formats.FORMATS:
            path = formats.export_path(stem, fmt)
            sizes[fmt] = round(formats.file_bytes(path) / 2**20, 2)
            rows.append(measure(fmt, formats.load_runner(fmt, path), images, labels, reference))
        import openvino as ov

        compiled = ov.Core().compile_model(str(formats.export_path(stem, "openvino") / "model.xml"), "CPU",
                                           {"INFERENCE_PRECISION_HINT": "bf16"})
        rows.append(measure("openvino-bf16", lambda batch: compiled(batch)[0], images, labels, reference))

    keras_rate = rows[0]["images_per_s_batch_128"]
    for row in rows:
        row["speed_over_keras_batch_128"] = round(row["images_per_s_batch_128"] / keras_rate, 2)
    save("export" + (f"_{args.tag}" if args.tag else ""),
         {"command": "python " + " ".join(command), "export_run": export_run, "model": args.model,
          "model_settings": read_sidecar(args.model).get("settings"),
          "test_images": len(labels), "megabytes": sizes, "runtimes": rows,
          "int8_over_h5_size": round(sizes["tflite-int8"] / sizes["h5"], 3)})


if __name__ == "__main__":
    main()
