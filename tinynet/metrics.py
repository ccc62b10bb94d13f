"""Evaluating saved models: one prefetched pass over the test set gives every metric."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tinynet import backend, cli, runtime
from tinynet.batches import in_batches
from tinynet.data import load_recorded
from tinynet.runfiles import read_sidecar
from tinynet.streaming import ImageFiles, take

STANDARD_MODELS = ["cifar10_lilTinyNet.h5", "cifar10_finetuned_lilTinyNet.h5"]


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    """--models, --data-dir and --batch-size, the same for both evaluators."""
    group = parser.add_argument_group("models and data")
    group.add_argument("--models", nargs="+", default=STANDARD_MODELS, metavar="PATH", help="saved .h5 models")
    cli.add_moved_data_arg(group)
    group.add_argument("--batch-size", type=int, default=128, help="the original harness evaluated at 128")
    runtime.add_runtime_arg(group)


@dataclass
class TestSet:
    images: np.ndarray | ImageFiles  # (n, h, w, 3) uint8, in memory or read from the files
    labels: np.ndarray  # (n,) int
    class_names: list[str]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_test_data(models: list[str], data_dir: str | None) -> TestSet:
    """The test set the models were trained against, as the first model's sidecar records it (the
    same images, image size and split), read from data_dir if given; without a sidecar, CIFAR-10."""
    record = next((read_sidecar(m).get("data", {}) for m in models if read_sidecar(m)), {})
    data, splits = load_recorded(record, data_dir)
    return TestSet(splits.images["test"], splits.labels["test"], data.class_names, data.source)


@dataclass
class Evaluation:
    """A model's test-set results, all from one pass."""

    path: str
    probabilities: np.ndarray  # (n, classes)
    labels: np.ndarray  # (n,) int
    class_names: list[str]
    seconds: float  # wall time of the pass
    penalty: float = 0.0  # the weights' L2 penalty (the linear head's), which model.evaluate() adds to its loss
    runtime: str = "tensorflow"  # what ran the pass (tinynet.runtime)
    loss: float = field(init=False)
    accuracy: float = field(init=False)
    top3_accuracy: float = field(init=False)
    confusion: np.ndarray = field(init=False)  # rows: true class, columns: predicted

    def __post_init__(self):
        one_hot = np.eye(len(self.class_names), dtype=np.float32)[self.labels]
        # Keras's own loss function and the penalty, so the number is model.evaluate()'s number
        self.loss = float(np.mean(keras.ops.convert_to_numpy(
            keras.losses.categorical_crossentropy(one_hot, self.probabilities)))) + self.penalty
        self.predicted = self.probabilities.argmax(1)
        self.accuracy = float(np.mean(self.predicted == self.labels))
        top3 = np.argsort(-self.probabilities, axis=1)[:, :3]
        self.top3_accuracy = float(np.mean((top3 == self.labels[:, None]).any(1)))
        classes = len(self.class_names)
        self.confusion = np.bincount(self.labels * classes + self.predicted, minlength=classes**2).reshape(classes, -1)

    @property
    def images_per_second(self) -> float:
        return len(self.labels) / self.seconds

    def per_class(self) -> list[dict[str, float]]:
        """Precision, recall, F1 and support of each class."""
        true_positive = np.diag(self.confusion).astype(float)
        precision = true_positive / np.maximum(self.confusion.sum(0), 1)
        recall = true_positive / np.maximum(self.confusion.sum(1), 1)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        support = self.confusion.sum(1)
        return [{"class": name, "precision": p, "recall": r, "f1": f, "support": int(n)}
                for name, p, r, f, n in zip(self.class_names, precision, recall, f1, support, strict=True)]

    def accuracy_interval(self, z: float = 1.96) -> tuple[float, float]:
        """Wilson's 95% interval for the accuracy, given the test set's size: where the accuracy on
        all images like these lies, as far as this many test images can tell."""
        n, p = len(self.labels), self.accuracy
        centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
        return float(centre - half), float(centre + half)

    def calibration(self, bins: int = 10) -> tuple[list[dict[str, float]], float]:
        """The reliability diagram's bins of the top class's probability (confidence, accuracy and
        count of each non-empty bin) and the expected calibration error: the gap between
        confidence and accuracy, averaged over the bins by their share of the images."""
        confidence = self.probabilities.max(1)
        correct = self.predicted == self.labels
        which = np.minimum((confidence * bins).astype(int), bins - 1)
        rows = [{"low": k / bins, "high": (k + 1) / bins, "confidence": float(confidence[which == k].mean()),
                 "accuracy": float(correct[which == k].mean()), "count": int(np.sum(which == k))}
                for k in range(bins) if np.any(which == k)]
        error = sum(row["count"] * abs(row["confidence"] - row["accuracy"]) for row in rows) / len(self.labels)
        return rows, float(error)

    def worst_mistakes(self, count: int = 8) -> np.ndarray:
        """Indices of the wrongly classified test images with the highest loss (the lowest
        probability of their true class): the model's most confident mistakes."""
        wrong = np.flatnonzero(self.predicted != self.labels)
        true_probability = self.probabilities[wrong, self.labels[wrong]]
        return wrong[np.argsort(true_probability, kind="stable")[:count]]

    def most_confused(self, count: int = 5) -> list[tuple[str, str, int]]:
        """(true class, predicted class, count) for the largest off-diagonal cells."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        cells = np.argsort(-off, axis=None)[:count]
        return [(self.class_names[i], self.class_names[j], int(off[i, j]))
                for i, j in zip(*np.unravel_index(cells, off.shape), strict=True) if off[i, j] > 0]


def pass_runner(model: keras.Model, images: np.ndarray | ImageFiles, batch_size: int, choice: str,
                extra_images: int = 0) -> runtime.Runner:
    """The runtime for a pass of the model over these images (and extra_images more, timed after)."""
    probe = take(images, np.arange(min(batch_size, len(images))))
    return runtime.runner(model, probe, len(images) + extra_images, choice)


def evaluate(path: str, model: keras.Model, images: np.ndarray | ImageFiles, labels: np.ndarray,
             class_names: list[str], batch_size: int, forward: runtime.Runner | None = None) -> Evaluation:
    """One batched, prefetched pass of the model over the images, through `forward` (default:
    Keras's own predict, tinynet.runtime)."""
    forward = forward or runtime.tensorflow_runner(model)
    batches = in_batches(images, batch_size)
    forward(next(iter(batches)).numpy())  # warm-up: trace once, outside the timing
    progress = keras.utils.Progbar(len(labels), unit_name="image")
    start = time.perf_counter()
    probabilities = []
    for batch in batches:
        probabilities.append(forward(batch.numpy()))
        progress.add(len(batch))
    seconds = time.perf_counter() - start
    penalty = float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses))
    return Evaluation(path, np.concatenate(probabilities), np.asarray(labels).reshape(-1), class_names, seconds,
                      penalty, forward.name)


def throughput(forward: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int = 256) -> float:
    """Images per second of a forward pass at batch_size on images already in memory, after a warm-up."""
    forward(images[:batch_size])
    start = time.perf_counter()
    for first in range(0, len(images), batch_size):
        forward(images[first:first + batch_size])
    return len(images) / (time.perf_counter() - start)


def latency_ms(infer: Callable[[np.ndarray], np.ndarray], image: np.ndarray, repeats: int = 30) -> float:
    """Median milliseconds for one image through a forward pass (compiled_call for Keras's own:
    predict() adds per-call overhead)."""
    batch = image[None]
    infer(batch)  # warm-up: trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        infer(batch)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def compiled_call(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """The model's forward pass in inference mode, traced once: tf.function on TensorFlow, jax.jit on JAX."""
    if backend.on_tensorflow():
        traced = tf.function(lambda batch: model(batch, training=False))
        return lambda batch: traced(batch).numpy()
    import jax

    variables = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
    jitted = jax.jit(lambda variables, batch: model.stateless_call(*variables, batch, training=False)[0])
    return lambda batch: np.asarray(jitted(variables, batch))


def model_facts(path: str, model: keras.Model) -> dict[str, float]:
    """Size facts: total and trainable parameters, file size in MB."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return {"total_params": model.count_params(), "trainable_params": trainable,
            "file_mb": round(os.path.getsize(path) / 2**20, 2)}


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Rows as an aligned text table; columns are (key, heading, format)."""
    cells = [[heading for _, heading, _ in columns]]
    cells += [[format(row[key], fmt) if row.get(key) is not None else "-" for key, _, fmt in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def report_files(paths: list[Path]) -> None:
    print("\nfiles written:")
    for path in paths:
        print(f"  {path}")
