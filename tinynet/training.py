"""Training plumbing shared by both stages: features, callbacks, history, atomic saving, sidecars."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tinynet.data import Dataset, split_validation

PATIENCE = 3  # epochs without a better validation accuracy before early stopping


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(m,) or (m, 1) integer labels to (m, num_classes) float32 one-hot rows."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels).reshape(-1)]


def split_data(data: Dataset, val_split: float, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "val", "test"}: (uint8 images, one-hot labels); validation is carved from training,
    stratified and seeded, so both stages hold out the same images."""
    train_idx, val_idx = split_validation(data.y_train, val_split, seed)
    splits = {"train": (data.x_train[train_idx], data.y_train[train_idx]),
              "val": (data.x_train[val_idx], data.y_train[val_idx]),
              "test": (data.x_test, data.y_test)}
    return {name: (x, one_hot(y, data.num_classes)) for name, (x, y) in splits.items()}


def augmented_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """Shuffled training batches, each image randomly flipped and shifted by up to 1/8 of its size
    (a random crop of the zero-padded image). Images stay uint8: the model resizes and scales them."""
    height, width = images.shape[1:3]
    pad_h, pad_w = height // 8, width // 8

    def augment(image, label):
        image = tf.image.random_flip_left_right(image)
        image = tf.image.pad_to_bounding_box(image, pad_h, pad_w, height + 2 * pad_h, width + 2 * pad_w)
        image = tf.image.random_crop(image, (height, width, 3))
        return image, label

    return (tf.data.Dataset.from_tensor_slices((images, labels))
            .shuffle(len(images), seed=seed)
            .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))


def cosine_schedule(peak: float, total_steps: int, warmup_steps: int = 0) -> keras.optimizers.schedules.CosineDecay:
    """Linear warm-up from 0 to `peak` over warmup_steps, then a cosine decay to 0."""
    if warmup_steps:
        return keras.optimizers.schedules.CosineDecay(0.0, total_steps - warmup_steps,
                                                      warmup_target=peak, warmup_steps=warmup_steps)
    return keras.optimizers.schedules.CosineDecay(peak, total_steps)


def evaluate_splits(model: keras.Model, inputs: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                    batch_size: int) -> dict[str, dict[str, float]]:
    """Loss and accuracy on validation and, once, on test."""
    return {split: {name: float(value) for name, value in model.evaluate(
        inputs[split], labels[split], batch_size=batch_size, verbose=0, return_dict=True).items()}
        for split in ("val", "test")}


def run_info(stage: str, args, data: Dataset, splits: dict, history: keras.callbacks.History,
             metrics: dict, times: dict, **extra) -> dict:
    """What the sidecar records: settings, classes, data, per-epoch history, metrics and times."""
    return {
        "stage": stage,
        "settings": vars(args),
        "class_names": data.class_names,
        "data": {"source": data.source, **{split: len(x) for split, (x, _) in splits.items()}},
        **extra,
        "history": history_rows(history),
        "metrics": metrics,
        "times": times,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def extract_features(extractor: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """One streamed forward pass: features are written batch by batch into one preallocated array,
    so the upscaled images never exist all at once and the output is never copied."""
    features = np.empty((len(images), *extractor.output_shape[1:]), dtype=np.float32)
    progress = keras.utils.Progbar(len(images), unit_name="image")
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        features[start:start + len(batch)] = extractor.predict_on_batch(batch)
        progress.add(len(batch))
    return features


class EpochClock(keras.callbacks.Callback):
    """Adds the learning rate and the wall time since training began to each epoch's logs."""

    def __init__(self, offset_seconds: float = 0.0):
        super().__init__()
        self.offset_seconds = offset_seconds

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["seconds"] = self.offset_seconds + time.perf_counter() - self.start


def training_callbacks(state_dir: Path, log_dir: str | None) -> list[keras.callbacks.Callback]:
    """Early stopping with the best weights restored, a checkpoint of the best weights,
    and optionally TensorBoard logs and a per-epoch CSV."""
    state_dir.mkdir(parents=True, exist_ok=True)
    callbacks = [
        EpochClock(),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=PATIENCE, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(state_dir / "best.weights.h5"), monitor="val_accuracy",
                                        save_best_only=True, save_weights_only=True),
    ]
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        callbacks += [keras.callbacks.CSVLogger(str(Path(log_dir) / "epochs.csv")),
                      keras.callbacks.TensorBoard(log_dir)]
    return callbacks


def history_rows(history: keras.callbacks.History) -> list[dict[str, float]]:
    """Keras's columns of per-epoch values as one row per epoch."""
    columns = history.history
    return [{"epoch": epoch + 1, **{key: float(values[i]) for key, values in columns.items()}}
            for i, epoch in enumerate(history.epoch)]


@contextmanager
def timed(times: dict[str, float], phase: str) -> Iterator[None]:
    """Record the wall time of a phase into times[phase], in seconds."""
    start = time.perf_counter()
    yield
    times[phase] = round(time.perf_counter() - start, 2)


def sidecar_path(model_path: str | Path) -> Path:
    """cifar10_lilTinyNet.h5 -> cifar10_lilTinyNet.json"""
    return Path(model_path).with_suffix(".json")


def state_dir(model_path: str | Path) -> Path:
    """Checkpoints of a run in progress live beside its output: cifar10_lilTinyNet.state/"""
    return Path(model_path).with_suffix(".state")


def save_model(model: keras.Model, path: str | Path) -> None:
    """Write the model so that a crash never leaves a half-written file: to a temporary file
    in the same folder first, then renamed over the target in one step."""
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # same suffix: Keras picks the format by it
    try:
        model.save(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_sidecar(model_path: str | Path, info: dict) -> None:
    """The JSON beside a finished model; the run's checkpoints are no longer needed after it."""
    write_json(sidecar_path(model_path), info)
    shutil.rmtree(state_dir(model_path), ignore_errors=True)


def write_json(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def read_sidecar(model_path: str | Path) -> dict:
    """The settings, history and metrics that training wrote beside a model; {} if none."""
    path = sidecar_path(model_path)
    return json.loads(path.read_text()) if path.exists() else {}
